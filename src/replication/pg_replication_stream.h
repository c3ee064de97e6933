// PgReplicationStream: the libpq side of logical replication. Opens a
// replication=database connection, checks the server (IDENTIFY_SYSTEM,
// wal_level, publication and its tables, slot), creates the pgoutput slot when
// missing and allowed, runs START_REPLICATION, then reads CopyData frames and
// sends standby status updates.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lsn.h"
#include "replication/pg_connection.h"
#include "replication/replication_stream.h"

namespace outboxd::replication {

struct StreamOptions {
  std::string dsn;
  std::string slot = "outboxd";
  std::string publication = "outboxd";
  bool create_slot = true;
  bool messages = true;  // request logical decoding messages (PostgreSQL 14+)
  // "schema.table" names that must be in the publication.
  std::vector<std::string> tables;
};

struct SystemInfo {
  std::string system_id;
  int timeline = 0;
  Lsn xlog_pos;
  int server_version = 0;
  int proto_version = 1;
  Lsn slot_confirmed_flush;  // where streaming resumes
  bool slot_created = false;
};

class PgReplicationStream : public ReplicationStream {
 public:
  // Connects, checks and starts streaming from the slot's confirmed position.
  // FailedPreconditionError with what to do for: wal_level not logical, missing
  // publication or table not in it, missing slot with create_slot=false, a slot
  // of another plugin. UnavailableError for transient faults, including "slot
  // is active for PID" (another instance holds it).
  static absl::StatusOr<std::unique_ptr<PgReplicationStream>> Start(const StreamOptions& options);

  absl::StatusOr<bool> ReadFrame(absl::Duration timeout, std::string_view* frame) override;
  absl::Status SendStatus(const StandbyStatus& status) override;

  const SystemInfo& info() const { return info_; }
  ~PgReplicationStream() override;

 private:
  PgReplicationStream(std::unique_ptr<PgConnection> conn, SystemInfo info)
      : conn_(std::move(conn)), info_(std::move(info)) {}
  std::unique_ptr<PgConnection> conn_;
  SystemInfo info_;
  char* buffer_ = nullptr;  // the last frame from PQgetCopyData, freed on the next read
};

// The pgoutput proto_version for a server_version_num: 4 from 16, 3 from 15,
// 2 from 14, else 1. Streaming stays off whatever the version.
int ProtoVersionFor(int server_version);

}  // namespace outboxd::replication
