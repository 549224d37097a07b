// Reading DCP directories: `.metadata` checked against the data files, then regions filled from the mapped
// items that overlap them.
#include "volt/checkpoint/dcp.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "dcp_metadata.h"
#include "mapped_file.h"
#include "torch_archive.h"
#include "volt/error.h"

namespace volt {
namespace {

std::string join_path(const std::string& dir, const std::string& file) {
  return !dir.empty() && dir.back() == '/' ? dir + file : dir + "/" + file;
}

// "[1, 2, 3]", as c10 prints an IntArrayRef.
std::string text(const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); }

// The data files of one load, each mapped once.
class ItemFiles {
 public:
  explicit ItemFiles(std::string dir) : dir_(std::move(dir)) {}
  const std::shared_ptr<detail::MappedFile>& file(const DcpStorage& storage) {
    auto& mapped = files_[storage.file];
    if (!mapped) mapped = detail::MappedFile::open(join_path(dir_, storage.file), "DCP data file");
    VOLT_CHECK(storage.offset <= mapped->size() && storage.length <= mapped->size() - storage.offset, "'",
               mapped->path(), "' is ", mapped->size(), " bytes, but an item lies at [", storage.offset, ", ",
               storage.offset + storage.length, ") (truncated file or offsets out of range)");
    return mapped;
  }
  // The chunk's tensor, viewing the mapping.
  at::Tensor chunk(const std::string& name, const DcpTensorInfo& info, const DcpChunkInfo& chunk) {
    const auto& mapped = file(chunk.storage);
    const std::string what = mapped->path() + " (item '" + name + "' at offsets " + text(chunk.offsets) + ")";
    const Value value = detail::read_torch_archive(mapped, mapped->data() + chunk.storage.offset,
                                                   chunk.storage.length, what, true);
    VOLT_CHECK(value.is_tensor(), "'", what, "' holds a ", kind_name(value.kind()), ", not a tensor");
    const at::Tensor& tensor = value.to_tensor();
    VOLT_CHECK(tensor.scalar_type() == info.dtype && tensor.sizes().vec() == chunk.sizes, "'", what,
               "' holds a ", c10::toString(tensor.scalar_type()), " tensor of size ",
               text(tensor.sizes().vec()), " but .metadata says ", c10::toString(info.dtype), " of size ",
               text(chunk.sizes));
    return tensor;
  }
  void release(const at::Tensor& tensor) {
    for (auto& [name, mapped] : files_)
      if (mapped->release_pages(tensor)) return;
  }

 private:
  std::string dir_;
  std::map<std::string, std::shared_ptr<detail::MappedFile>> files_;
};

}  // namespace

bool is_dcp_directory(const std::string& path) {
  struct stat status {};
  return ::stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode) &&
         ::stat(join_path(path, ".metadata").c_str(), &status) == 0;
}

DcpMetadata read_dcp_metadata(const std::string& dir) {
  struct stat status {};
  VOLT_CHECK(::stat(dir.c_str(), &status) == 0 && S_ISDIR(status.st_mode), "'", dir,
             "' is not a directory; a DCP checkpoint is a directory with a .metadata file");
  const std::string path = join_path(dir, ".metadata");
  VOLT_CHECK(::stat(path.c_str(), &status) == 0, "'", dir,
             "' has no .metadata file: it is not a DCP checkpoint, or its save did not complete");
  const auto mapped = detail::MappedFile::open(path, "DCP metadata file");
  DcpMetadata metadata = detail::parse_dcp_metadata(mapped->data(), mapped->size(), path);
  // Every item must lie inside its file, so that a truncated file is found before anything is loaded.
  std::map<std::string, uint64_t> sizes;
  for (const std::string& file : metadata.files) {
    const std::string data_path = join_path(dir, file);
    VOLT_CHECK(::stat(data_path.c_str(), &status) == 0 && S_ISREG(status.st_mode), "'", path,
               "' refers to the data file '", file, "', which is missing from '", dir, "'");
    sizes[file] = static_cast<uint64_t>(status.st_size);
  }
  const auto check = [&](const std::string& name, const DcpStorage& storage) {
    const uint64_t size = sizes[storage.file];
    VOLT_CHECK(storage.offset <= size && storage.length <= size - storage.offset, "'",
               join_path(dir, storage.file), "' is ", size, " bytes, but item '", name, "' lies at [",
               storage.offset, ", ", storage.offset + storage.length,
               ") (the file is truncated, or .metadata's offsets are out of range)");
  };
  for (const auto& [name, tensor] : metadata.tensors)
    for (const auto& chunk : tensor.chunks) check(name, chunk.storage);
  for (const auto& [name, storage] : metadata.bytes) check(name, storage);
  return metadata;
}

void load_dcp(const std::string& dir, const std::map<std::string, std::vector<DcpChunk>>& requests) {
  load_dcp(dir, read_dcp_metadata(dir), requests);
}

void load_dcp(const std::string& dir, const DcpMetadata& metadata,
              const std::map<std::string, std::vector<DcpChunk>>& requests) {
  ItemFiles files(dir);
  for (const auto& [name, regions] : requests) {
    auto found = metadata.tensors.find(name);
    VOLT_CHECK(found != metadata.tensors.end(), "DCP checkpoint '", dir, "' has no tensor '", name,
               "' (it has ", metadata.tensors.size(), " tensors; `volt inspect ", dir, "` lists them)");
    const DcpTensorInfo& info = found->second;
    const size_t dims = info.size.size();
    for (const DcpChunk& region : regions) {
      VOLT_CHECK(region.local.defined() && region.offsets.size() == dims &&
                     static_cast<size_t>(region.local.dim()) == dims,
                 "cannot load '", name, "' from '", dir, "': the tensor has ", dims,
                 " dimensions; pass offsets and a destination with as many");
      const std::vector<int64_t> sizes = region.local.sizes().vec();
      for (size_t d = 0; d < dims; ++d)
        VOLT_CHECK(region.offsets[d] >= 0 && region.offsets[d] + sizes[d] <= info.size[d], "cannot load '",
                   name, "' from '", dir, "': the region at ", text(region.offsets), " of size ", text(sizes),
                   " lies outside the tensor's size ", text(info.size));
      int64_t covered = 0;
      for (const DcpChunkInfo& chunk : info.chunks) {
        std::vector<int64_t> lo(dims), hi(dims);
        bool overlaps = true;
        for (size_t d = 0; d < dims && overlaps; ++d) {
          lo[d] = std::max(region.offsets[d], chunk.offsets[d]);
          hi[d] = std::min(region.offsets[d] + sizes[d], chunk.offsets[d] + chunk.sizes[d]);
          overlaps = lo[d] < hi[d];
        }
        if (!overlaps) continue;
        const at::Tensor source = files.chunk(name, info, chunk);
        at::Tensor from = source, to = region.local;
        int64_t volume = 1;
        for (size_t d = 0; d < dims; ++d) {
          const auto dim = static_cast<int64_t>(d);
          from = from.narrow(dim, lo[d] - chunk.offsets[d], hi[d] - lo[d]);
          to = to.narrow(dim, lo[d] - region.offsets[d], hi[d] - lo[d]);
          volume *= hi[d] - lo[d];
        }
        at::NoGradGuard no_grad;
        to.copy_(from);
        covered += volume;
        files.release(source);
      }
      VOLT_CHECK(covered == region.local.numel(), "'", dir, "': the chunks of '", name, "' cover ", covered,
                 " of the ", region.local.numel(), " elements requested");
    }
  }
}

at::Tensor load_dcp_tensor(const std::string& dir, const DcpMetadata& metadata, const std::string& name) {
  auto found = metadata.tensors.find(name);
  VOLT_CHECK(found != metadata.tensors.end(), "DCP checkpoint '", dir, "' has no tensor '", name, "'");
  at::Tensor whole = at::empty(found->second.size, at::TensorOptions().dtype(found->second.dtype));
  load_dcp(dir, metadata, {{name, {{std::vector<int64_t>(found->second.size.size(), 0), whole}}}});
  return whole;
}

std::string load_dcp_bytes(const std::string& dir, const std::string& name) {
  const DcpMetadata metadata = read_dcp_metadata(dir);
  auto found = metadata.bytes.find(name);
  VOLT_CHECK(found != metadata.bytes.end(), "DCP checkpoint '", dir, "' has no byte item '", name, "'");
  ItemFiles files(dir);
  const auto& mapped = files.file(found->second);
  return std::string(mapped->data() + found->second.offset, found->second.length);
}

Value load_dcp_object(const std::string& dir, const std::string& name) {
  const DcpMetadata metadata = read_dcp_metadata(dir);
  auto found = metadata.bytes.find(name);
  VOLT_CHECK(found != metadata.bytes.end(), "DCP checkpoint '", dir, "' has no byte item '", name, "'");
  ItemFiles files(dir);
  const auto& mapped = files.file(found->second);
  return detail::read_torch_archive(mapped, mapped->data() + found->second.offset, found->second.length,
                                    mapped->path() + " (byte item '" + name + "')", false);
}

}  // namespace volt
