// PyTorch files: volt reads what Python's torch.save writes (PyTorch 1.13 and 2.x, and real Lightning
// checkpoints) with every value equal, and Python's torch.load reads what volt writes with every value equal.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "checkpoint/describe.h"
#include "checkpoint/pickle.h"
#include "checkpoint/zip_archive.h"
#include "python_oracle.h"
#include "temp_dir.h"
#include "test_paths.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"

namespace fs = std::filesystem;
using volt::Value;
using volt::testing::run_command;
using volt::testing::TempDir;
using volt::testing::venv_python;

namespace {

struct Python {
  std::string name;
  std::string executable;
};

// Debian's python3-torch (1.13) and the venv's torch 2.x: both must agree with volt.
std::vector<Python> pythons() { return {{"torch1.13", "/usr/bin/python3"}, {"torch2", venv_python()}}; }

std::string oracle() { return volt::testing::test_source_dir() + "/checkpoint/torch_file_oracle.py"; }

bool has_torch(const Python& python) {
  return run_command("'" + python.executable + "' -c 'import torch'").exit_code == 0;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// A value with everything the format must carry.
Value everything() {
  Value sd = Value::dict(/*ordered=*/true);
  auto& d = sd.to_dict();
  at::manual_seed(3);
  d.set("float64", at::randn({3, 2}, at::kDouble));
  d.set("float32", at::randn({5}));
  d.set("float16", at::randn({2, 3}).to(at::kHalf));
  d.set("bfloat16", at::randn({4, 1}).to(at::kBFloat16));
  d.set("int64", at::randint(-(int64_t(1) << 40), int64_t(1) << 40, {3}, at::kLong));
  d.set("int32", at::randint(-100000, 100000, {2, 2}, at::kInt));
  d.set("int16", at::randint(-30000, 30000, {3}, at::kShort));
  d.set("int8", at::randint(-128, 127, {4}, at::kChar));
  d.set("uint8", at::randint(0, 255, {4}, at::kByte));
  d.set("bool", at::rand({6}) > 0.5);
  at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6});
  d.set("base", base);
  d.set("transposed", base.t());
  d.set("slice", base.slice(0, 1, 3).slice(1, 0, 6, 2));
  d.set("scalar", at::scalar_tensor(2.5));
  d.set("zero_size", at::zeros({0, 3}));
  d.set("special", at::tensor({NAN, INFINITY, -INFINITY, -0.0, 1e-40}, at::kFloat));
  d.set("grad_leaf", at::randn({3}).requires_grad_(true));

  Value hp = Value::dict();
  hp.to_dict().set("lr", 1e-3);
  hp.to_dict().set("layers", Value::list({4, 8, 2}));
  hp.to_dict().set("betas", Value::tuple({0.9, 0.999}));
  hp.to_dict().set("name", "tiny \xc3\xa9\xe4\xb8\xad");
  hp.to_dict().set("flag", true);
  hp.to_dict().set("nothing", Value());
  hp.to_dict().set("big", -(int64_t(1) << 40));
  hp.to_dict().set("huge", INT64_MAX);
  hp.to_dict().set("raw", Value::bytes(std::string("\x00\xff\x80"
                                                   "a",
                                                   4)));
  Value state = Value::dict();  // optimizer state is keyed by int
  state.to_dict().set(0, Value::dict());
  state.to_dict().find(0)->to_dict().set("step", at::scalar_tensor(7.0));

  Value top = Value::dict();
  top.to_dict().set("state_dict", sd);
  top.to_dict().set("hyper_parameters", hp);
  top.to_dict().set("state", state);
  top.to_dict().set("epoch", 3);
  top.to_dict().set("many",
                    Value::list(std::vector<Value>(2500, Value(1.5))));  // more than one APPENDS batch
  return top;
}

TEST(Value, DictKeysFollowPythonEquality) {
  Value d = Value::dict();
  d.to_dict().set(1, "int");
  d.to_dict().set(true, "bool replaces int");  // True == 1 in Python
  d.to_dict().set(1.0, "float replaces too");
  d.to_dict().set("1", "a string is another key");
  d.to_dict().set(Value::tuple({1, "a"}), "tuple");
  EXPECT_EQ(d.to_dict().size(), 3u);
  EXPECT_EQ(d.to_dict().find(1)->to_string(), "float replaces too");
  EXPECT_EQ(d.to_dict().find(Value::tuple({1, "a"}))->to_string(), "tuple");
  EXPECT_EQ(d["1"].to_string(), "a string is another key");
  EXPECT_TRUE(d.to_dict().items()[0].first.is_int()) << "the first key object stays, as in Python";
  try {
    (void)d["missing"];
    FAIL();
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no key 'missing'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Value(3).to_string(), volt::Error);
  EXPECT_EQ(Value::list({1, 2.5, "x", Value()}).repr(), "[1, 2.5, 'x', None]");
}

TEST(TorchFile, RoundTripKeepsEveryValueAndSharesStorages) {
  TempDir dir("torch-file");
  const Value original = everything();
  volt::save_torch_file(dir / "a.pt", original);
  volt::TorchFileReader reader(dir / "a.pt");
  EXPECT_TRUE(reader.contents().equals(original)) << reader.contents().repr(4);
  EXPECT_EQ(volt::testing::describe(reader.contents()), volt::testing::describe(original));
  const Value& sd = reader.contents()["state_dict"];
  EXPECT_TRUE(sd.to_dict().ordered());
  const at::Tensor base = sd["base"].to_tensor();
  EXPECT_TRUE(base.storage().is_alias_of(sd["transposed"].to_tensor().storage()));
  EXPECT_TRUE(base.storage().is_alias_of(sd["slice"].to_tensor().storage()));
  EXPECT_EQ(sd["slice"].to_tensor().strides(), (c10::IntArrayRef{6, 2}));
  EXPECT_TRUE(sd["grad_leaf"].to_tensor().requires_grad());
  // Mapped, not copied: the tensor's bytes live in the file mapping, and writing to them is private.
  EXPECT_TRUE(reader.release_pages(base));
  at::Tensor writable = sd["float32"].to_tensor();
  writable.fill_(42);
  EXPECT_TRUE(volt::TorchFileReader(dir / "a.pt")
                  .contents()["state_dict"]["float32"]
                  .equals(original["state_dict"]["float32"]));
}

TEST(TorchFile, PythonTorchSaveReadsWithEveryValueEqual) {
  for (const Python& python : pythons()) {
    SCOPED_TRACE(python.name);
    ASSERT_TRUE(has_torch(python)) << python.executable << " has no torch; run scripts/install-deps.sh";
    TempDir dir("torch-file");
    const auto written =
        run_command("'" + python.executable + "' '" + oracle() + "' write '" + (dir / "") + "'");
    ASSERT_EQ(written.exit_code, 0) << written.output;
    for (const char* name : {"state_dict.pt", "lightning_shaped.ckpt"}) {
      SCOPED_TRACE(name);
      volt::TorchFileReader reader(dir / name);
      EXPECT_EQ(volt::testing::describe(reader.contents()), read_json(dir / name + ".json"));
    }
    // The Lightning-shaped checkpoint's pieces are where Lightning puts them, with the right kinds.
    volt::TorchFileReader ckpt(dir / "lightning_shaped.ckpt");
    const Value& c = ckpt.contents();
    EXPECT_EQ(c["global_step"].to_int(), 12345678901);
    EXPECT_EQ(c["hyper_parameters"]["raw"].to_string(), std::string("\x00\xff\x80"
                                                                    "a",
                                                                    4));
    const Value& adam = c["optimizer_states"].items()[0];
    EXPECT_TRUE(adam["state"].to_dict().find(0)->to_dict().contains("exp_avg_sq"));
    EXPECT_EQ(adam["param_groups"].items()[0]["betas"].items()[1].to_double(), 0.999);
  }
}

TEST(TorchFile, VoltWritesWhatPythonTorchLoadReadsWithEveryValueEqual) {
  for (const Python& python : pythons()) {
    SCOPED_TRACE(python.name);
    ASSERT_TRUE(has_torch(python)) << python.executable << " has no torch; run scripts/install-deps.sh";
    TempDir dir("torch-file");
    const Value value = everything();
    volt::save_torch_file(dir / "volt.pt", value);
    std::ofstream(dir / "volt.pt.json") << volt::testing::describe(value).dump();
    const auto checked = run_command("'" + python.executable + "' '" + oracle() + "' check '" +
                                     (dir / "volt.pt") + "' '" + (dir / "volt.pt.json") + "'");
    EXPECT_EQ(checked.exit_code, 0) << checked.output;
  }
}

TEST(TorchFile, RealLightningCheckpointReadsAndRoundTripsThroughPython) {
  const Python python = pythons()[1];
  if (run_command("'" + python.executable + "' -c 'import lightning'").exit_code != 0)
    GTEST_SKIP() << "no Lightning in " << python.executable << "; run scripts/install-deps.sh";
  TempDir dir("torch-file");
  const auto written =
      run_command("'" + python.executable + "' '" + oracle() + "' lightning '" + (dir / "") + "'");
  ASSERT_EQ(written.exit_code, 0) << written.output;
  volt::TorchFileReader reader(dir / "real.ckpt");
  const nlohmann::json expected = read_json(dir / "real.ckpt.json");
  EXPECT_EQ(volt::testing::describe(reader.contents()), expected);
  for (const char* key : {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers",
                          "callbacks", "loops", "hyper_parameters"})
    EXPECT_TRUE(reader.contents().to_dict().contains(key)) << key;
  // What volt writes back, Lightning's torch reads as the same checkpoint.
  volt::save_torch_file(dir / "again.ckpt", reader.contents());
  std::ofstream(dir / "again.ckpt.json") << expected.dump();
  const auto checked = run_command("'" + python.executable + "' '" + oracle() + "' check '" +
                                   (dir / "again.ckpt") + "' '" + (dir / "again.ckpt.json") + "'");
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
}

// Writes an archive shaped like torch.save's around arbitrary pickle bytes.
void write_archive(const std::string& path, const std::string& pickle,
                   const std::vector<std::pair<std::string, std::string>>& records = {}) {
  volt::write_file_atomically(path, [&](volt::AtomicFileWriter& out) {
    volt::detail::ZipWriter zip(out);
    zip.add("archive/data.pkl", pickle.data(), pickle.size());
    for (const auto& r : records) zip.add("archive/" + r.first, r.second.data(), r.second.size());
    zip.add("archive/version", "3\n", 2);
    zip.finish();
  });
}

void expect_error(const std::string& path, const std::string& fragment,
                  const volt::TorchReadOptions& options = {}) {
  try {
    volt::TorchFileReader reader(path, options);
    ADD_FAILURE() << "no error for " << path << "; read " << reader.contents().repr(3);
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(TorchFile, ForeignGlobalsStayInertDataOrAreRejectedInStrictMode) {
  TempDir dir("torch-file");
  // What `pickle.dumps(os.system('touch PWNED'))`-style files do: call a global with arguments.
  const std::string marker = dir / "PWNED";
  Value call = Value::object("os", "system", Value::tuple({"touch '" + marker + "'"}));
  call.to_object().has_args = true;
  volt::save_torch_file(dir / "evil.pt", Value::list({call}));
  volt::TorchFileReader reader(dir / "evil.pt");
  const Value& kept = reader.contents().items()[0];
  ASSERT_TRUE(kept.is_object());
  EXPECT_EQ(kept.to_object().qualified_name(), "os.system");
  EXPECT_FALSE(fs::exists(marker)) << "volt executed a pickled call";
  expect_error(dir / "evil.pt", "os.system", volt::TorchReadOptions().strict(true));
}

TEST(TorchFile, HostilePicklesEndInClearErrors) {
  using namespace std::string_literals;
  TempDir dir("torch-file");
  const std::string path = dir / "bad.pt";
  auto check = [&](const std::string& pickle, const std::string& fragment,
                   const std::vector<std::pair<std::string, std::string>>& records = {}) {
    SCOPED_TRACE(fragment);
    write_archive(path, pickle, records);
    expect_error(path, fragment);
  };
  check("\x80\x02"s +
            "]q\x00h\x00"
            "a."s,
        "cyclic");  // l.append(l)
  std::string deep = "\x80\x02"s + "]";
  for (int i = 0; i < 5000; ++i) deep += "\x85";  // (((...,),),)
  check(deep + ".", "nest deeper");
  std::string laughs = "\x80\x02"s + "N";  // ((x, x), (x, x)), ...: 2 bytes per doubling
  for (int i = 0; i < 60; ++i) laughs += "2\x86";
  check(laughs + ".", "shared references expand");
  check("\x80\x02"s +
            "X\xff\xff\xff\x7f"
            "abc."s,
        "longer than what is left");
  check("\x80\x02"s + "h\x05.", "memo entry 5");
  check("\x80\x02"s + "0.", "empty stack");
  check("\x80\x02"s + "K\x01K\x02.", "stops with 2 values");
  check("\x80\x02"s + "\xff", "opcode 0xff");
  check("\x80\x02"s + "N", "truncated");
  // A tensor view reaching past its storage, and a storage larger than its record.
  const std::string tensor_head = "\x80\x02"s +
                                  "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"s +
                                  "ctorch\nFloatStorage\nX\x01\x00\x00\x00"
                                  "0X\x03\x00\x00\x00"
                                  "cpu"s;
  check(tensor_head + "K\x04tQK\x00K\x05\x85K\x01\x85\x89}tR."s, "reaches element 4",
        {{"data/0", std::string(16, 'x')}});
  check(tensor_head + "K\x08tQK\x00K\x02\x85K\x01\x85\x89}tR."s, "record holds only 16 bytes",
        {{"data/0", std::string(16, 'x')}});
  check(tensor_head + "K\x04tQK\x00K\x02\x85K\x01\x85\x89}tR."s, "no record 'archive/data/0'");
}

TEST(TorchFile, TruncatedAndCorruptArchivesEndInClearErrors) {
  TempDir dir("torch-file");
  volt::save_torch_file(dir / "good.pt", everything());
  std::ifstream in(dir / "good.pt", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string path = dir / "cut.pt";
  int errors = 0;
  for (size_t length = 0; length < bytes.size(); length += 1 + length / 16) {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(length));
    try {
      volt::TorchFileReader reader(path);
      ADD_FAILURE() << "a file cut to " << length << " of " << bytes.size() << " bytes was accepted";
    } catch (const volt::Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 50);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "\x80\x02\x8a\x0alegacy";
  expect_error(path, "legacy format");
}

}  // namespace
