// Writing DCP directories from one or many ranks. The whole directory is built under a temporary sibling
// name and swapped into place by rank 0 only after every rank's file is durable: a crash at any moment
// leaves either the old checkpoint or the new one at `dir`, never a mix.
#include <ATen/ATen.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <set>

#include "dcp_metadata.h"
#include "mapped_file.h"
#include "pickle.h"
#include "torch_archive.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/checkpoint/dcp.h"
#include "volt/distributed/byte_collectives.h"
#include "volt/error.h"

namespace volt {
namespace {

constexpr uint64_t kItemAlignment = 64;  // items start aligned, so that their records map without a copy

std::string join_path(const std::string& dir, const std::string& file) { return dir + "/" + file; }

std::pair<std::string, std::string> split_path(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  if (slash == std::string::npos) return {".", dir};
  return {slash == 0 ? "/" : dir.substr(0, slash), dir.substr(slash + 1)};
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  VOLT_CHECK(fd >= 0, "cannot open directory '", dir,
             "' to make the checkpoint durable: ", std::strerror(errno));
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  VOLT_CHECK(synced == 0, "fsync of directory '", dir, "' failed: ", std::strerror(error));
}

void remove_tree(const std::string& path) {
  if (DIR* dir = ::opendir(path.c_str())) {
    while (const dirent* entry = ::readdir(dir)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") ::unlink(join_path(path, name).c_str());
    }
    ::closedir(dir);
  }
  ::rmdir(path.c_str());
}

bool directory_is_empty(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return false;
  bool empty = true;
  while (const dirent* entry = ::readdir(dir))
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) empty = false;
  ::closedir(dir);
  return empty;
}

// Every rank's bytes, in rank order (one process: its own).
std::vector<std::string> gather(ProcessGroup* group, const std::string& bytes) {
  return group ? all_gather_bytes(*group, bytes) : std::vector<std::string>{bytes};
}

std::string encode(const Value& value) {
  std::vector<detail::PickledStorage> none;
  return detail::pickle(value, &none);
}
Value decode(const std::string& bytes) {
  const detail::StorageLoader none = [](const std::string&, c10::ScalarType, int64_t,
                                        const std::string&) -> c10::Storage {
    VOLT_FAIL("save_dcp: a rank's plan holds a tensor");
  };
  return detail::unpickle(bytes.data(), bytes.size(), none, "save_dcp's gathered plan");
}

Value ints(const std::vector<int64_t>& v) { return Value::tuple(std::vector<Value>(v.begin(), v.end())); }
std::vector<int64_t> ints(const Value& v) {
  std::vector<int64_t> out;
  for (const Value& item : v.items()) out.push_back(item.to_int());
  return out;
}

// One rank's plan: ("t", name, dtype, global size, offsets, sizes) per chunk, ("b", name) per byte item.
Value local_plan(const DcpState& state, const std::string& dir) {
  Value plan = Value::list();
  for (const auto& [name, tensor] : state.tensors) {
    for (const DcpChunk& chunk : tensor.chunks) {
      const size_t dims = tensor.global_size.size();
      VOLT_CHECK(chunk.local.defined() && !chunk.local.is_meta() && chunk.local.layout() == at::kStrided,
                 "cannot save '", name, "' to '", dir, "': a chunk is undefined, meta or not dense; ",
                 "materialize it first");
      VOLT_CHECK(chunk.offsets.size() == dims && static_cast<size_t>(chunk.local.dim()) == dims,
                 "cannot save '", name, "' to '", dir, "': its global size has ", dims,
                 " dimensions but a chunk has ", chunk.offsets.size(), " offsets and ", chunk.local.dim(),
                 " dimensions");
      detail::dcp_dtype_name(chunk.local.scalar_type());
      plan.items().push_back(
          Value::tuple({"t", name, static_cast<int64_t>(chunk.local.scalar_type()), ints(tensor.global_size),
                        ints(chunk.offsets), ints(chunk.local.sizes().vec())}));
    }
  }
  for (const auto& [name, bytes] : state.bytes) {
    VOLT_CHECK(!state.tensors.count(name), "cannot save '", dir, "': '", name,
               "' is both a tensor and a byte item");
    plan.items().push_back(Value::tuple({"b", name}));
  }
  return plan;
}

struct Owned {
  std::set<std::pair<std::string, std::vector<int64_t>>> chunks;  // (name, offsets) this rank writes
  std::set<std::string> bytes;
};

// Every rank decides the same: each (name, offsets) and byte item is written by the lowest rank that has it
// (replicated tensors, passed by every rank, are written once). Rank 0's metadata comes out of it too.
Owned plan_all(const std::vector<std::string>& plans, int64_t rank, const std::string& dir,
               DcpMetadata& metadata) {
  Owned owned;
  std::set<std::pair<std::string, std::vector<int64_t>>> seen;
  for (size_t r = 0; r < plans.size(); ++r) {
    const Value plan = decode(plans[r]);
    for (const Value& item : plan.items()) {
      const auto& f = item.items();
      const std::string name = f[1].to_string();
      if (f[0].to_string() == "b") {
        if (metadata.bytes.count(name)) continue;
        metadata.bytes[name] = {};
        if (static_cast<int64_t>(r) == rank) owned.bytes.insert(name);
        continue;
      }
      const auto dtype = static_cast<c10::ScalarType>(f[2].to_int());
      const std::vector<int64_t> size = ints(f[3]), offsets = ints(f[4]), sizes = ints(f[5]);
      if (!seen.insert({name, offsets}).second) continue;
      auto [it, fresh] = metadata.tensors.try_emplace(name);
      DcpTensorInfo& info = it->second;
      if (fresh) {
        info.dtype = dtype;
        info.size = size;
      }
      VOLT_CHECK(info.dtype == dtype && info.size == size, "cannot save '", name, "' to '", dir,
                 "': ranks disagree on its dtype or global size (", c10::toString(info.dtype), " vs ",
                 c10::toString(dtype), "); every rank must describe the same tensor");
      info.chunks.push_back({offsets, sizes, {}});
      if (static_cast<int64_t>(r) == rank) owned.chunks.insert({name, offsets});
    }
  }
  for (const auto& [name, info] : metadata.tensors)
    detail::check_tiling("cannot save '" + dir + "'", name, info);
  return owned;
}

// Writes this rank's items into `path`; returns ("t", name, offsets, offset, length) / ("b", name, ...).
Value write_rank_file(const std::string& path, const DcpState& state, const Owned& owned) {
  Value written = Value::list();
  AtomicFileWriter out(path);
  uint64_t at = 0;
  const auto pad = [&] {
    static const char zeros[kItemAlignment] = {};
    const uint64_t padding = (kItemAlignment - at % kItemAlignment) % kItemAlignment;
    out.write(zeros, padding);
    at += padding;
  };
  for (const auto& [name, bytes] : state.bytes) {
    if (!owned.bytes.count(name)) continue;
    pad();
    out.write(bytes.data(), bytes.size());
    written.items().push_back(Value::tuple(
        {"b", name, Value::tuple(), static_cast<int64_t>(at), static_cast<int64_t>(bytes.size())}));
    at += bytes.size();
  }
  for (const auto& [name, tensor] : state.tensors) {
    for (const DcpChunk& chunk : tensor.chunks) {
      if (!owned.chunks.count({name, chunk.offsets})) continue;
      pad();
      // A chunk that views a bigger storage is cloned, or torch.save would write the whole storage.
      at::Tensor data = chunk.local.detach();
      if (!data.device().is_cpu()) data = data.cpu();
      if (!detail::covers_storage(data)) data = data.contiguous().clone();
      const uint64_t start = at;
      detail::write_torch_archive(
          [&](const void* bytes, uint64_t size) {
            out.write(bytes, size);
            at += size;
          },
          Value(data), {}, path);
      written.items().push_back(Value::tuple(
          {"t", name, ints(chunk.offsets), static_cast<int64_t>(start), static_cast<int64_t>(at - start)}));
    }
  }
  out.commit();
  return written;
}

// Every rank's file, each in its own directory entry, under `temporary`: returns what each rank wrote
// ("ok" + its items) or why it could not ("error" + the reason), gathered on every rank.
std::vector<std::string> write_parts(const std::string& temporary, const DcpState& state, const Owned& owned,
                                     ProcessGroup* group) {
  const int64_t rank = group ? group->rank() : 0;
  std::string failure;
  if (rank == 0 && ::mkdir(temporary.c_str(), 0755) != 0)
    failure = "cannot create '" + temporary + "': " + std::strerror(errno);
  if (group) group->barrier();
  struct stat status {};
  if (failure.empty() && rank != 0 && ::stat(temporary.c_str(), &status) != 0)
    failure =
        "rank " + std::to_string(rank) + " cannot see '" + temporary + "' (ranks must share the file system)";
  std::string written;
  if (failure.empty()) {
    try {
      written = encode(
          write_rank_file(join_path(temporary, "__" + std::to_string(rank) + "_0.distcp"), state, owned));
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  // Every rank learns whether every other rank's file is durable.
  return gather(group, failure.empty() ? "ok" + written : "error" + failure);
}

// Rank 0: `.metadata` (with where each rank put its items) and the extra files beside the parts, then the
// temporary directory swapped into `dir` in one step where the file system can.
void commit(const std::string& dir, const std::string& temporary, const DcpState& state, DcpMetadata metadata,
            const std::vector<std::string>& results) {
  std::string errors;
  for (size_t r = 0; r < results.size(); ++r)
    if (results[r].rfind("error", 0) == 0)
      errors += "\n  rank " + std::to_string(r) + ": " + results[r].substr(5);
  VOLT_CHECK(errors.empty(), "not every rank wrote its part:", errors);
  for (size_t r = 0; r < results.size(); ++r) {
    const std::string file = "__" + std::to_string(r) + "_0.distcp";
    for (const Value& item : decode(results[r].substr(2)).items()) {
      const auto& f = item.items();
      const DcpStorage storage{file, static_cast<uint64_t>(f[3].to_int()),
                               static_cast<uint64_t>(f[4].to_int())};
      if (f[0].to_string() == "b") {
        metadata.bytes[f[1].to_string()] = storage;
        continue;
      }
      for (DcpChunkInfo& chunk : metadata.tensors[f[1].to_string()].chunks)
        if (chunk.offsets == ints(f[2])) chunk.storage = storage;
    }
  }
  for (const auto& [name, bytes] : state.files) {
    VOLT_CHECK(!name.empty() && name.find('/') == std::string::npos && name != ".metadata" &&
                   name.rfind("__", 0) != 0,
               "cannot save '", dir, "': extra file '", name,
               "' must be a plain file name that is not .metadata or a __*.distcp name");
    write_file_atomically(join_path(temporary, name),
                          [&](AtomicFileWriter& out) { out.write(bytes.data(), bytes.size()); });
  }
  const std::string pickled = detail::pickle_dcp_metadata(metadata);
  write_file_atomically(join_path(temporary, ".metadata"),
                        [&](AtomicFileWriter& out) { out.write(pickled.data(), pickled.size()); });
  fsync_directory(temporary);
  const std::string parent = split_path(dir).first;
  struct stat status {};
  if (::stat(dir.c_str(), &status) != 0) {
    VOLT_CHECK(::rename(temporary.c_str(), dir.c_str()) == 0, "cannot move the new checkpoint into '", dir,
               "': ", std::strerror(errno));
    fsync_directory(parent);
    return;
  }
  VOLT_CHECK(S_ISDIR(status.st_mode) && (is_dcp_directory(dir) || directory_is_empty(dir)), "cannot save '",
             dir, "': it exists and is not a DCP checkpoint; remove it or choose another directory");
  // The old checkpoint stays whole under the temporary name until it is removed; where the file system
  // cannot exchange the two, the old one moves aside first.
  if (::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0) {
    const std::string aside = temporary + ".old";
    VOLT_CHECK(::rename(dir.c_str(), aside.c_str()) == 0 && ::rename(temporary.c_str(), dir.c_str()) == 0,
               "cannot move the new checkpoint into '", dir, "': ", std::strerror(errno));
    fsync_directory(parent);
    remove_tree(aside);
  } else {
    fsync_directory(parent);
    remove_tree(temporary);  // now the old checkpoint
  }
}

}  // namespace

// Plan (every rank's chunks gathered, who writes what), write (each rank its part, in a temporary
// sibling), commit (rank 0's metadata and swap); every rank learns the outcome.
void save_dcp(const std::string& dir, const DcpState& state, ProcessGroup* group) {
  const int64_t rank = group ? group->rank() : 0;
  const auto [parent, base] = split_path(dir);
  VOLT_CHECK(!base.empty() && base != "." && base != "..", "cannot save a DCP checkpoint to '", dir,
             "': name a directory (e.g. 'run/step-100')");
  struct stat status {};
  VOLT_CHECK(::stat(parent.c_str(), &status) == 0 && S_ISDIR(status.st_mode), "cannot save '", dir,
             "': its parent directory '", parent, "' does not exist; create it first");

  DcpMetadata metadata;
  const Owned owned = plan_all(gather(group, encode(local_plan(state, dir))), rank, dir, metadata);
  metadata.paths = state.paths;

  // A fresh temporary sibling, named by rank 0, so that nothing under `dir` changes until the swap.
  std::string token;
  if (rank == 0)
    token = std::to_string(static_cast<int64_t>(std::random_device{}() >> 1) * 4096 + ::getpid() % 4096);
  if (group) token = broadcast_bytes(*group, token, 0);
  const std::string temporary = join_path(parent, "." + base + ".dcp-tmp." + token);
  const auto results = write_parts(temporary, state, owned, group);

  std::string committed = "error";
  if (rank == 0) {
    try {
      commit(dir, temporary, state, std::move(metadata), results);
      committed = "ok";
    } catch (const std::exception& e) {
      committed = std::string("error") + e.what();
      remove_tree(temporary);
    }
  }
  const std::string outcome = group ? gather(group, committed).front() : committed;
  VOLT_CHECK(outcome == "ok", "saving DCP checkpoint '", dir,
             "' failed; the previous checkpoint there (if any) is ", "unchanged: ", outcome.substr(5));
}

}  // namespace volt
