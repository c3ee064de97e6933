// What `outboxd check` (and `run`, before it streams) says about an outbox
// table's columns as outboxd will read them: the columns each [[outbox]]
// entry names, whether the table has them, whether pgoutput sends them (a
// publication's column list, generated columns), and whether their types can
// hold what outboxd reads. A required column that is missing or unsent, or a
// type no value of which outboxd can read, would dead-letter every row: FAIL.
// Pure: the caller reads the catalog (check_outbox.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "commands/check_report.h"
#include "outbox/table_mapping.h"

namespace outboxd::commands {

// One column of an outbox table, from pg_attribute.
struct TableColumn {
  std::string name;
  uint32_t type_oid = 0;  // the base type's OID for a column of a domain type
  std::string type;       // as format_type() prints it, e.g. "character varying(255)"
  // Non-empty when pgoutput does not send the column, saying why (e.g. "is not
  // in publication 'outboxd''s column list").
  std::string unsent;
};

struct ColumnFinding {
  CheckStatus status = CheckStatus::kOk;
  std::string message;
  std::string hint;
};

// The findings for `table` (its [[outbox]] entry) given the table's columns:
// one FAIL or WARN per problem, or one ok naming the columns read when there
// is none. `table_sql` names the table in messages, `topic_placeholders` the
// row fields the topic template reads (aggregate_type, event_type,
// destination), `publication` the publication in hints.
std::vector<ColumnFinding> DiagnoseColumns(const outbox::TableConfig& table, std::string_view table_sql,
                                           const std::vector<TableColumn>& columns,
                                           std::string_view publication);

// The row fields ("aggregate_type", "event_type", "destination") that a topic
// template reads, in that order.
std::vector<std::string> TemplateFields(std::string_view topic_template);

}  // namespace outboxd::commands
