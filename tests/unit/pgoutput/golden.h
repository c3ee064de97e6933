// Loads the golden pgoutput payloads of tests/testdata/pgoutput (captured from a real
// PostgreSQL 15 by capture.sh): one message per line as "LSN <TAB> xid <TAB> hex".
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/lsn.h"

namespace outboxd::pgoutput::testing {

struct GoldenMessage {
  std::string file;
  int line = 0;
  Lsn lsn;           // the lsn column of pg_logical_slot_*_binary_changes
  uint32_t xid = 0;  // the xid column (0 for a non-transactional logical message)
  std::string bytes;
};

inline std::string GoldenDir() { return std::string(OUTBOXD_TESTDATA_DIR) + "/pgoutput"; }

inline std::string Unhex(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::runtime_error("odd hex length");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// Throws on a missing or malformed file, so a broken golden fails the test loudly.
inline std::vector<GoldenMessage> LoadGolden(const std::string& name) {
  const std::string path = GoldenDir() + "/" + name;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<GoldenMessage> out;
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.empty() || text[0] == '#') continue;
    const size_t tab1 = text.find('\t');
    const size_t tab2 = text.find('\t', tab1 + 1);
    if (tab1 == std::string::npos || tab2 == std::string::npos) {
      throw std::runtime_error(path + ":" + std::to_string(line) + ": expected 3 fields");
    }
    GoldenMessage m;
    m.file = name;
    m.line = line;
    absl::StatusOr<Lsn> lsn = Lsn::Parse(text.substr(0, tab1));
    if (!lsn.ok()) throw std::runtime_error(path + ": bad LSN");
    m.lsn = *lsn;
    m.xid = static_cast<uint32_t>(std::stoul(text.substr(tab1 + 1, tab2 - tab1 - 1)));
    m.bytes = Unhex(text.substr(tab2 + 1));
    out.push_back(std::move(m));
  }
  if (out.empty()) throw std::runtime_error(path + " holds no messages");
  return out;
}

inline std::vector<std::string> GoldenFiles() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(GoldenDir())) {
    if (entry.path().extension() == ".hex") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline std::vector<GoldenMessage> LoadAllGolden() {
  std::vector<GoldenMessage> all;
  for (const std::string& name : GoldenFiles()) {
    std::vector<GoldenMessage> file = LoadGolden(name);
    all.insert(all.end(), file.begin(), file.end());
  }
  return all;
}

}  // namespace outboxd::pgoutput::testing
