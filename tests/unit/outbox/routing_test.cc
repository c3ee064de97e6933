#include "outbox/routing.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::outbox {
namespace {

using ::testing::HasSubstr;

std::string Message(const absl::Status& status) {
  return std::string(status.message().data(), status.message().size());
}

OutboxEvent Event() {
  OutboxEvent event;
  event.id = "0190f6a1-8a4b-7c3d-9e2f-0123456789ab";
  event.aggregate_type = "Order";
  event.aggregate_id = "42";
  event.event_type = "OrderCreated";
  event.destination = "orders-v2";
  event.source.schema = "sales";
  event.source.table = "outbox";
  return event;
}

std::string Render(std::string_view text, const OutboxEvent& event) {
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse(text);
  EXPECT_TRUE(topic.ok()) << topic.status();
  if (!topic.ok()) return "";
  std::string out;
  const absl::Status status = topic->Render(event, &out);
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

TEST(TopicTemplateTest, FixedName) {
  EXPECT_EQ(Render("orders", Event()), "orders");
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse("orders");
  ASSERT_TRUE(topic.ok());
  EXPECT_EQ(topic->text(), "orders");
}

TEST(TopicTemplateTest, DefaultTemplate) {
  EXPECT_EQ(Render("outbox.event.{aggregate_type}", Event()), "outbox.event.Order");
}

TEST(TopicTemplateTest, EveryPlaceholder) {
  EXPECT_EQ(Render("{schema}.{table}.{event_type}.{destination}.{aggregate_type}", Event()),
            "sales.outbox.OrderCreated.orders-v2.Order");
  EXPECT_EQ(Render("{destination}", Event()), "orders-v2");
  EXPECT_EQ(Render("{aggregate_type}{event_type}", Event()), "OrderOrderCreated");
  EXPECT_EQ(Render("x_{aggregate_type}_y", Event()), "x_Order_y");
}

TEST(TopicTemplateTest, UnknownPlaceholder) {
  for (std::string_view text :
       {"outbox.{aggregate}", "{Aggregate_Type}", "{}", "a.{routedByValue}"}) {
    absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse(text);
    EXPECT_EQ(topic.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(Message(topic.status()), HasSubstr("unknown placeholder")) << text;
    EXPECT_THAT(Message(topic.status()), HasSubstr(std::string(text))) << text;
  }
}

TEST(TopicTemplateTest, DollarPlaceholderIsNotSupported) {
  // Debezium's "${routedByValue}": '$' can never be in a topic name.
  EXPECT_EQ(TopicTemplate::Parse("outbox.event.${routedByValue}").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TopicTemplateTest, UnbalancedBraces) {
  for (std::string_view text :
       {"outbox.{aggregate_type", "outbox}", "{{aggregate_type}}", "a{b{aggregate_type}", "{"}) {
    absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse(text);
    EXPECT_EQ(topic.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(Message(topic.status()), HasSubstr("unbalanced")) << text;
    EXPECT_THAT(Message(topic.status()), HasSubstr("topic template")) << text;
  }
}

TEST(TopicTemplateTest, InvalidFixedNames) {
  for (std::string_view text : {"", ".", "..", "a/b", "a b", "événement"}) {
    EXPECT_EQ(TopicTemplate::Parse(text).status().code(), absl::StatusCode::kInvalidArgument)
        << text;
  }
  EXPECT_EQ(TopicTemplate::Parse(std::string(250, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(TopicTemplate::Parse(std::string(249, 'a')).ok());
  EXPECT_EQ(TopicTemplate::Parse(std::string(250, 'a') + "{event_type}").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TopicTemplateTest, LiteralThatCanNeverBeValid) {
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse("orders/{event_type}");
  EXPECT_EQ(topic.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(topic.status()), HasSubstr("orders/{event_type}"));
}

TEST(TopicTemplateTest, RenderedNameMustBeValid) {
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse("outbox.event.{aggregate_type}");
  ASSERT_TRUE(topic.ok());
  OutboxEvent event = Event();
  std::string out;

  event.aggregate_type = "Order Created";
  absl::Status status = topic->Render(event, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("\"outbox.event.Order Created\""));
  EXPECT_THAT(Message(status), HasSubstr("outbox.event.{aggregate_type}"));

  event.aggregate_type = std::string(237, 'x');  // 13 + 237 = 250
  EXPECT_EQ(topic->Render(event, &out).code(), absl::StatusCode::kInvalidArgument);
  event.aggregate_type = std::string(236, 'x');
  EXPECT_TRUE(topic->Render(event, &out).ok());

  absl::StatusOr<TopicTemplate> bare = TopicTemplate::Parse("{aggregate_type}");
  ASSERT_TRUE(bare.ok());
  event.aggregate_type = "";
  EXPECT_EQ(bare->Render(event, &out).code(), absl::StatusCode::kInvalidArgument);
  event.aggregate_type = "..";
  EXPECT_EQ(bare->Render(event, &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TopicTemplateTest, TableOfALogicalMessageIsEmpty) {
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse("{table}");
  ASSERT_TRUE(topic.ok());
  OutboxEvent event = Event();
  event.source.table.clear();
  std::string out;
  EXPECT_EQ(topic->Render(event, &out).code(), absl::StatusCode::kInvalidArgument);
}

// {database} is filled in per stream (config::StreamConfig); the template
// language knows it too, from the event's source, and never renders "".
TEST(TopicTemplateTest, DatabasePlaceholder) {
  OutboxEvent event = Event();
  event.source.database = "billing";
  EXPECT_EQ(Render("outbox.{database}.{aggregate_type}", event), "outbox.billing.Order");
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse("outbox.{database}");
  ASSERT_TRUE(topic.ok());
  std::string out;
  const absl::Status status = topic->Render(Event(), &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("needs the event's database"));
}

TEST(TopicTemplateTest, NullDestination) {
  absl::StatusOr<TopicTemplate> topic = TopicTemplate::Parse("{destination}");
  ASSERT_TRUE(topic.ok());
  OutboxEvent event = Event();
  event.destination.reset();
  std::string out;
  const absl::Status status = topic->Render(event, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("destination"));
  // A fixed template does not need one.
  absl::StatusOr<TopicTemplate> fixed = TopicTemplate::Parse("orders");
  ASSERT_TRUE(fixed.ok());
  EXPECT_TRUE(fixed->Render(event, &out).ok());
  EXPECT_EQ(out, "orders");
}

TEST(TopicTemplateTest, RenderReplacesAndReusesTheBuffer) {
  absl::StatusOr<TopicTemplate> topic =
      TopicTemplate::Parse("{schema}.{table}.{event_type}.{destination}.{aggregate_type}");
  ASSERT_TRUE(topic.ok());
  std::string out = "previous content";
  out.reserve(512);
  const char* buffer = out.data();
  ASSERT_TRUE(topic->Render(Event(), &out).ok());
  EXPECT_EQ(out, "sales.outbox.OrderCreated.orders-v2.Order");
  EXPECT_EQ(out.data(), buffer);  // no reallocation
}

TEST(ValidateTopicNameTest, KafkaRules) {
  EXPECT_TRUE(ValidateTopicName("a").ok());
  EXPECT_TRUE(ValidateTopicName("Orders_v1.created-2").ok());
  EXPECT_TRUE(ValidateTopicName("...").ok());
  EXPECT_TRUE(ValidateTopicName(std::string(249, 'z')).ok());
  for (const std::string& bad :
       {std::string(), std::string("."), std::string(".."), std::string(250, 'z'),
        std::string("a:b"), std::string("a\nb"), std::string("a\0b", 3)}) {
    const absl::Status status = ValidateTopicName(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Message(status), HasSubstr("not a valid Kafka topic name")) << bad;
  }
}

TEST(RecordKeyTest, IdOrAggregateId) {
  const OutboxEvent event = Event();
  EXPECT_EQ(RecordKey(event, KeySource::kId), "0190f6a1-8a4b-7c3d-9e2f-0123456789ab");
  EXPECT_EQ(RecordKey(event, KeySource::kId).data(), event.id.data());
  EXPECT_EQ(RecordKey(event, KeySource::kAggregateId), "42");
  EXPECT_EQ(RecordKey(event, KeySource::kAggregateId).data(), event.aggregate_id.data());
}

}  // namespace
}  // namespace outboxd::outbox
