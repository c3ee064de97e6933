// Checks the hot-path promise of DecodeMessageInto: once `out` holds the message kind and its
// vectors have grown, decoding more messages of that kind allocates nothing. Global operator
// new is replaced in this binary only, to count allocations.
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "golden.h"
#include "pgoutput/decoder.h"

namespace {
thread_local size_t allocations = 0;
}  // namespace

void* operator new(size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace outboxd::pgoutput {
namespace {

size_t AllocationsWhile(const std::vector<std::string>& messages, Message& out, int rounds) {
  const size_t before = allocations;
  for (int i = 0; i < rounds; ++i) {
    for (const std::string& m : messages) {
      if (!DecodeMessageInto(m, out).ok()) ADD_FAILURE() << "decode failed";
    }
  }
  return allocations - before;
}

TEST(DecoderAllocationTest, RepeatedRowMessagesAllocateNothing) {
  for (const char* file : {"insert.hex", "update_full.hex", "delete_key.hex", "truncate.hex",
                           "toast_unchanged.binary.hex"}) {
    SCOPED_TRACE(file);
    const auto golden = testing::LoadGolden(file);
    const std::string& row_change = golden[golden.size() - 2].bytes;  // the one before Commit
    Message out;
    ASSERT_TRUE(DecodeMessageInto(row_change, out).ok());  // grows the vectors once
    EXPECT_EQ(AllocationsWhile({row_change}, out, 1000), 0u);
  }
}

TEST(DecoderAllocationTest, BeginMessageCommitAllocateNothing) {
  // The table-less outbox path: Begin, logical Message, Commit, over and over.
  const auto golden = testing::LoadGolden("message_transactional.hex");
  Message out;
  EXPECT_EQ(AllocationsWhile({golden[0].bytes, golden[1].bytes, golden[2].bytes}, out, 1000), 0u);
}

TEST(DecoderAllocationTest, BeginInsertCommitCyclesAllocateNothing) {
  // The table outbox path: every transaction switches the message kind from Begin to Insert
  // to Commit; the tuple vector must survive the switches.
  const auto golden = testing::LoadGolden("insert.hex");
  std::vector<std::string> cycle;
  for (const auto& m : golden) {
    if (m.bytes[0] == 'B' || m.bytes[0] == 'I' || m.bytes[0] == 'C') cycle.push_back(m.bytes);
  }
  ASSERT_GE(cycle.size(), 3u);
  Message out;
  AllocationsWhile(cycle, out, 1);  // warm up
  EXPECT_EQ(AllocationsWhile(cycle, out, 1000), 0u);
}

TEST(DecoderAllocationTest, CounterSeesAllocations) {
  // Guards the test itself: a replaced operator new that counted nothing would pass above.
  const size_t before = allocations;
  auto* p = new std::vector<int>(100);
  delete p;
  EXPECT_GE(allocations - before, 2u);
}

}  // namespace
}  // namespace outboxd::pgoutput
