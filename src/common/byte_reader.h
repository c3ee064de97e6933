// ByteReader: a bounds-checked reader of PostgreSQL's big-endian wire types (Int8/16/32/64,
// Byten, NUL-terminated String) over one message. Every read either yields the value or a
// DataLossError that names the message and the byte offset, so a decoder built on it cannot
// read past its input whatever the bytes say. Header-only so that the CopyBoth frame codec
// (src/replication/copy_frame.cc) shares it without a link dependency on the decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"

namespace outboxd {

class ByteReader {
 public:
  // `what` names the input in errors ("pgoutput Insert message") and `unit` is its noun
  // ("message", "frame"); both are only read on the error path and must outlive the reader
  // (string literals, in practice).
  ByteReader(std::string_view data, std::string_view what, std::string_view unit = "message")
      : data_(data), what_(what), unit_(unit) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  std::string_view what() const { return what_; }

  // `field` names what is read ("relation OID"), for the error message only.
  absl::StatusOr<uint8_t> ReadUint8(std::string_view field) {
    return ReadBigEndian<uint8_t>(field);
  }
  absl::StatusOr<int16_t> ReadInt16(std::string_view field) {
    return ReadBigEndian<int16_t>(field);
  }
  absl::StatusOr<int32_t> ReadInt32(std::string_view field) {
    return ReadBigEndian<int32_t>(field);
  }
  absl::StatusOr<uint32_t> ReadUint32(std::string_view field) {
    return ReadBigEndian<uint32_t>(field);
  }
  absl::StatusOr<int64_t> ReadInt64(std::string_view field) {
    return ReadBigEndian<int64_t>(field);
  }
  absl::StatusOr<uint64_t> ReadUint64(std::string_view field) {
    return ReadBigEndian<uint64_t>(field);
  }

  // The next `n` bytes, as a view into the input.
  absl::StatusOr<std::string_view> ReadBytes(size_t n, std::string_view field) {
    if (n > remaining()) return Truncated(n, field);
    std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  // All bytes left, as a view into the input (possibly empty).
  std::string_view ReadRest() {
    std::string_view out = data_.substr(pos_);
    pos_ = data_.size();
    return out;
  }

  // PostgreSQL's String: bytes up to a NUL, which must lie inside the input. The view excludes
  // the NUL; the reader moves past it.
  absl::StatusOr<std::string_view> ReadString(std::string_view field) {
    const size_t nul = data_.find('\0', pos_);
    if (nul == std::string_view::npos) {
      return absl::DataLossError(fmt::format(
          "{} truncated at byte {}: {} (a NUL-terminated string) has no terminator in the {} "
          "bytes left of the {}-byte {}",
          what_, pos_, field, remaining(), data_.size(), unit_));
    }
    std::string_view out = data_.substr(pos_, nul - pos_);
    pos_ = nul + 1;
    return out;
  }

  // A complete message must use every byte: anything left means the layout we decoded is not
  // the one the sender wrote, and the fields we did decode cannot be trusted either.
  absl::Status ExpectEnd() const {
    if (pos_ == data_.size()) return absl::OkStatus();
    return absl::DataLossError(fmt::format(
        "{} has {} trailing bytes at byte {}: the {}-byte {} should end there, so its "
        "layout is not the one this decoder expects",
        what_, remaining(), pos_, data_.size(), unit_));
  }

  // DataLossError for a value that was read completely but is not valid, e.g. an unknown
  // tuple value kind. `at` is the offset where the bad value starts.
  absl::Status Malformed(size_t at, std::string_view detail) const {
    return absl::DataLossError(fmt::format("{} malformed at byte {}: {}", what_, at, detail));
  }

 private:
  template <typename T>
  absl::StatusOr<T> ReadBigEndian(std::string_view field) {
    static_assert(std::is_integral_v<T>);
    if (sizeof(T) > remaining()) return Truncated(sizeof(T), field);
    using U = std::make_unsigned_t<T>;
    U value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      value = static_cast<U>((static_cast<uint64_t>(value) << 8) |
                             static_cast<unsigned char>(data_[pos_ + i]));
    }
    pos_ += sizeof(T);
    return static_cast<T>(value);
  }

  absl::Status Truncated(size_t needed, std::string_view field) const {
    return absl::DataLossError(
        fmt::format("{} truncated at byte {}: {} needs {} bytes, {} left of the {}-byte {}",
                    what_, pos_, field, needed, remaining(), data_.size(), unit_));
  }

  std::string_view data_;
  std::string_view what_;
  std::string_view unit_;
  size_t pos_ = 0;
};

}  // namespace outboxd
