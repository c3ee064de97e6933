// ReplicationStream: the narrow interface the pipeline uses to read the
// replication CopyBoth stream and send standby status updates. The libpq
// implementation is PgReplicationStream; tests use fakes.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "replication/copy_frame.h"

namespace outboxd::replication {

class ReplicationStream {
 public:
  virtual ~ReplicationStream() = default;

  // Waits up to `timeout` for the next CopyData frame. Returns true and sets
  // `frame` (a view valid until the next call) when one arrived, false on
  // timeout. With a zero timeout it only takes what the connection already
  // holds, without waiting. UnavailableError when the connection broke or the
  // server ended the stream, with the server's words.
  virtual absl::StatusOr<bool> ReadFrame(absl::Duration timeout, std::string_view* frame) = 0;

  // The connection's socket, for the caller's poll() (readable: call
  // ReadFrame with a zero timeout); -1 when there is none (test doubles), and
  // the caller then waits in ReadFrame itself.
  virtual int socket() const { return -1; }

  // Sends an 'r' standby status update and flushes it to the socket.
  virtual absl::Status SendStatus(const StandbyStatus& status) = 0;
};

}  // namespace outboxd::replication
