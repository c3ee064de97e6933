// Decoding of single outbox column values as PostgreSQL prints them in text
// form (what pgoutput sends by default): timestamps, bytea, headers JSON,
// UTF-8 checks. Shared by the table mapper and the logical message mapper.
// Implemented in table_mapping.cc.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "outbox/event.h"

namespace outboxd::outbox {

// Built-in type OIDs (PostgreSQL's pg_type.dat) the mapper treats specially.
inline constexpr uint32_t kByteaOid = 17;
inline constexpr uint32_t kNameOid = 19;
inline constexpr uint32_t kTextOid = 25;
inline constexpr uint32_t kJsonOid = 114;
inline constexpr uint32_t kBpcharOid = 1042;
inline constexpr uint32_t kVarcharOid = 1043;
inline constexpr uint32_t kTimestampOid = 1114;
inline constexpr uint32_t kTimestamptzOid = 1184;
inline constexpr uint32_t kUuidOid = 2950;
inline constexpr uint32_t kJsonbOid = 3802;

// Parses a timestamp as PostgreSQL prints it with DateStyle=ISO
// ("2026-11-27 03:09:58.123456+00", "+05:30", "-08", "+05:53:28") or as ISO 8601
// ("2026-11-27T03:09:58.123456+00:00", "...Z"), into PostgreSQL microseconds
// since 2000-01-01 UTC. No offset means UTC (timestamp without time zone);
// a date alone means its midnight. Fractions beyond microseconds are truncated.
// InvalidArgumentError for anything else, including infinity and BC dates.
absl::StatusOr<int64_t> ParsePgTimestamp(std::string_view text);

// Decodes bytea's hex output form ("\x0a1b...") into raw bytes, replacing `out`.
// InvalidArgumentError for odd length, a non-hex digit, or the escape form
// (bytea_output = 'escape').
absl::Status DecodeByteaHex(std::string_view text, std::string* out);

// Limits on the JSON outboxd parses from rows and logical messages. Any role that
// can insert into an outbox table or emit a message writes this JSON, so it is
// hostile: a document nested 100,000 deep would overflow the stack in the
// recursive parts of nlohmann (dump, comparison), and a large one of tiny
// values costs tens of bytes of memory per input byte. Beyond a limit the
// event is a bad event with reason bad_event::kJsonLimit. jsonb itself caps
// nesting near max_stack_depth, so no stored jsonb value is near these.
inline constexpr size_t kMaxJsonDepth = 256;  // arrays and objects, the outermost included
inline constexpr size_t kMaxHeadersJsonBytes = size_t{1} << 20;   // 1 MiB of headers
inline constexpr size_t kMaxMessageJsonBytes = size_t{16} << 20;  // 16 MiB message content

// Parses a JSON object into headers, in document order: string values as is,
// any other value as its compact JSON text. `out` is replaced.
// InvalidArgumentError for invalid JSON or a JSON value that is not an object;
// tagged bad_event::kJsonLimit beyond kMaxJsonDepth or kMaxHeadersJsonBytes.
absl::Status ParseHeadersJson(std::string_view json, std::vector<Header>* out);

// True when `text` is well-formed UTF-8 (no overlong forms, no surrogates).
bool IsValidUtf8(std::string_view text);

// A short, printable, quote-escaped rendition of a value for error messages
// (values can be large or binary, and messages reach logs): at most `limit`
// bytes, non-printable bytes as \xNN, "..." when cut.
std::string Printable(std::string_view value, size_t limit = 64);

}  // namespace outboxd::outbox
