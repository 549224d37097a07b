#include "volt/core/cpu_features.h"

#include <fstream>
#include <set>
#include <sstream>

namespace volt {

CpuFeatures CpuFeatures::parse(const std::string& cpuinfo) {
  CpuFeatures f;
  std::istringstream lines(cpuinfo);
  std::string line;
  bool have_flags = false, have_model = false;
  while (std::getline(lines, line) && !(have_flags && have_model)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && !have_model) {
      f.model = value;
      have_model = true;
    } else if (key == "flags" && !have_flags) {
      std::istringstream words(value);
      std::set<std::string> set;
      for (std::string w; words >> w;) set.insert(w);
      auto has = [&](const char* name) { return set.count(name) > 0; };
      f.avx2 = has("avx2");
      f.fma = has("fma");
      f.avx512f = has("avx512f");
      f.avx512bw = has("avx512bw");
      f.avx512_bf16 = has("avx512_bf16");
      f.avx512_fp16 = has("avx512_fp16");
      f.amx_bf16 = has("amx_bf16");
      f.amx_fp16 = has("amx_fp16");
      have_flags = true;
    }
  }
  return f;
}

const CpuFeatures& CpuFeatures::host() {
  static const CpuFeatures features = [] {
    std::ifstream in("/proc/cpuinfo");
    std::stringstream text;
    text << in.rdbuf();
    return parse(text.str());
  }();
  return features;
}

std::vector<std::string> CpuFeatures::flags() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* name) {
    if (on) out.emplace_back(name);
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_fp16, "avx512_fp16");
  add(amx_bf16, "amx_bf16");
  add(amx_fp16, "amx_fp16");
  return out;
}

std::string CpuFeatures::summary() const {
  std::string out;
  for (const auto& f : flags()) out += (out.empty() ? "" : " ") + f;
  if (out.empty()) out = "baseline x86-64";
  if (!model.empty()) out += " (" + model + ")";
  return out;
}

}  // namespace volt
