// One parser per table of the config file, each in its own file (source.cc,
// sink.cc, outbox.cc, errors.cc, schema_registry.cc, ops.cc, shutdown.cc), so that the code
// for [sink] or [[outbox]] reads alone. Internal to src/config: config.cc calls
// them in order, then the checks that span tables (validate.cc).
#pragma once

#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "config/config.h"
#include "config/parser.h"

namespace outboxd::config {

// The keys each table accepts (unknown keys are refused with a suggestion).
const std::vector<std::string_view>& SourceKeys();
const std::vector<std::string_view>& SinkKeys();
const std::vector<std::string_view>& OutboxKeys();
const std::vector<std::string_view>& FieldKeys();
const std::vector<std::string_view>& ColumnKeys();
const std::vector<std::string_view>& MessagesKeys();
const std::vector<std::string_view>& ErrorsKeys();
const std::vector<std::string_view>& SchemaRegistryKeys();
const std::vector<std::string_view>& HttpKeys();
const std::vector<std::string_view>& LogKeys();
const std::vector<std::string_view>& ShutdownKeys();

// Each reads its table from the file's `root`; an absent optional table leaves
// the defaults.
absl::Status ParseSource(const Parser& p, const toml::table& root, SourceConfig* out);
absl::Status ParseSink(const Parser& p, const toml::table& root, KafkaConfig* out);
absl::Status ParseOutbox(const Parser& p, const toml::table& root,
                         std::vector<outbox::TableConfig>* out);
absl::Status ParseMessages(const Parser& p, const toml::table& root, MessagesConfig* out);
absl::Status ParseErrors(const Parser& p, const toml::table& root, ErrorsConfig* out);
absl::Status ParseSchemaRegistry(const Parser& p, const toml::table& root, SchemaRegistryConfig* out);
absl::Status ParseHttp(const Parser& p, const toml::table& root, HttpConfig* out);
absl::Status ParseLog(const Parser& p, const toml::table& root, LogConfig* out);
absl::Status ParseShutdown(const Parser& p, const toml::table& root, ShutdownConfig* out);

// The checks between tables (one key's range depends on another's), once
// every table parsed, and what a single-stream config fills in at once
// ({database} in topics): config/validate.cc.
absl::Status Validate(const Parser& p, const toml::table& root, Config* config);

}  // namespace outboxd::config
