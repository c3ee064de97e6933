#include "replication/standby_source.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::replication {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

StandbySource Standby17() { return StandbySource{.server_version = 170006, .slot = "outboxd"}; }

TEST(CheckStandbySourceTest, SixteenAndLaterDecodeOnAStandby) {
  EXPECT_TRUE(CheckStandbySource(Standby17()).ok());
  StandbySource sixteen = Standby17();
  sixteen.server_version = 160010;
  EXPECT_TRUE(CheckStandbySource(sixteen).ok());
  StandbySource fifteen = Standby17();
  fifteen.server_version = 150014;
  const absl::Status status = CheckStandbySource(fifteen);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("hot standby of PostgreSQL 15: logical decoding on a standby needs "
                                          "PostgreSQL 16 or later"));
}

TEST(CheckStandbySourceTest, FailoverAndSynchronizedSlotsAreRefusedWithWhatToDo) {
  StandbySource failover = Standby17();
  failover.failover = true;
  absl::Status status = CheckStandbySource(failover);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("Set failover = false"));

  StandbySource synced = Standby17();
  synced.slot_found = true;
  synced.slot_synced = true;
  status = CheckStandbySource(synced);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("\"outboxd\" on this hot standby is a synchronized copy"));
  EXPECT_THAT(status.message(), HasSubstr("another [source] slot name"));

  StandbySource own = Standby17();
  own.slot_found = true;
  EXPECT_TRUE(CheckStandbySource(own).ok());
}

TEST(CreationWaitMessageTest, SaysWhatTheCreationWaitsForAndWhatEndsIt) {
  CreationWait wait{.slot = "outboxd", .where = "host=replica port=5432 dbname=app user=outboxd",
                    .on_standby = true, .primary_dsn = false, .waited = absl::Milliseconds(5400),
                    .snapshots_requested = 0, .last_request_error = ""};
  EXPECT_EQ(CreationWaitMessage(wait),
            "creating replication slot \"outboxd\" on hot standby host=replica port=5432 dbname=app user=outboxd has "
            "waited 5s for the standby to replay a running-transactions record (a standby snapshot) from the "
            "primary: PostgreSQL starts decoding on a standby only from one, and a quiet primary writes one only "
            "after its next write. Set [source] primary_dsn so that outboxd asks the primary for one "
            "(pg_log_standby_snapshot()), or run SELECT pg_log_standby_snapshot() on the primary");

  wait.primary_dsn = true;
  wait.snapshots_requested = 3;
  std::string message = CreationWaitMessage(wait);
  EXPECT_THAT(message, HasSubstr("outboxd asked the primary ([source] primary_dsn) for 3 standby snapshot(s)"));
  EXPECT_THAT(message, HasSubstr("transactions open on the primary since the creation began must end first"));
  EXPECT_THAT(message, Not(HasSubstr("Set [source] primary_dsn")));

  wait.snapshots_requested = 0;
  wait.last_request_error = "permission denied for function pg_log_standby_snapshot";
  message = CreationWaitMessage(wait);
  EXPECT_THAT(message, HasSubstr("could not ask the primary"));
  EXPECT_THAT(message, HasSubstr("(last refusal: permission denied for function pg_log_standby_snapshot)"));

  CreationWait primary{.slot = "outboxd", .where = "host=db", .on_standby = false, .primary_dsn = false,
                       .waited = absl::Seconds(31), .snapshots_requested = 0, .last_request_error = ""};
  EXPECT_THAT(CreationWaitMessage(primary),
              HasSubstr("creating replication slot \"outboxd\" on host=db has waited 31s: PostgreSQL waits for the "
                        "transactions that were open when the creation began to end"));
  EXPECT_THAT(CreationTimeoutMessage(primary, absl::Minutes(10)), HasSubstr("; gave up after 10m and retries"));
}

}  // namespace
}  // namespace outboxd::replication
