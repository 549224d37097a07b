#include "volt/checkpoint/torch_file.h"

#include <ATen/ATen.h>

#include <cstring>
#include <fstream>

#include "mapped_file.h"
#include "pickle.h"
#include "torch_archive.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"
#include "zip_archive.h"

namespace volt {

bool TorchFileReader::is_torch_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "PK\x03\x04", 4) == 0;
}

namespace detail {

Value read_torch_archive(const std::shared_ptr<MappedFile>& file, const char* data, uint64_t size,
                         const std::string& path, bool strict, std::vector<std::string>* records) {
  VOLT_CHECK(size > 0, "'", path, "' is empty; a PyTorch file is a zip archive");
  if (size >= 2 && static_cast<unsigned char>(data[0]) == 0x80 && static_cast<unsigned char>(data[1]) <= 5)
    VOLT_FAIL("'", path,
              "' is a bare pickle (PyTorch's legacy format before 1.6, or pickle.dump); volt reads "
              "zip files: re-save it with torch.save in PyTorch >= 1.6");
  detail::ZipReader zip(data, size, path);
  VOLT_CHECK(!zip.entries().empty(), "'", path, "' is an empty zip archive, not a PyTorch file");
  if (records != nullptr)
    for (const auto& entry : zip.entries()) records->push_back(entry.name);
  // Every record lives under one folder, named after the file when PyTorch wrote it.
  const std::string& first = zip.entries().front().name;
  const size_t slash = first.find('/');
  VOLT_CHECK(slash != std::string::npos, "'", path,
             "' is a zip archive but not a PyTorch file (its first record '", first.substr(0, 80),
             "' is not inside a folder)");
  const std::string prefix = first.substr(0, slash + 1);
  if (zip.find(prefix + "constants.pkl") != nullptr || zip.find(prefix + "code/") != nullptr)
    VOLT_FAIL("'", path, "' is a TorchScript archive (torch.jit.save); volt reads torch.save files");
  const detail::ZipEntry* pickle = zip.find(prefix + "data.pkl");
  VOLT_CHECK(pickle != nullptr, "'", path, "' is a zip archive without '", prefix,
             "data.pkl'; it is not a torch.save file");
  if (const detail::ZipEntry* order = zip.find(prefix + "byteorder")) {
    const std::string value(zip.data(*order), order->size);
    VOLT_CHECK(value == "little" || value == "big", "'", path,
               "' has a corrupt byteorder record (neither 'little' nor 'big')");
    VOLT_CHECK(value == "little", "'", path,
               "' was saved on a big-endian machine; volt reads little-endian files");
  }

  const auto load = [&](const std::string& key, c10::ScalarType dtype, int64_t numel,
                        const std::string& /*location*/) -> c10::Storage {
    const std::string name = prefix + "data/" + key;
    const detail::ZipEntry* record = zip.find(name);
    VOLT_CHECK(record != nullptr, "'", path, "': the pickle refers to storage '", key.substr(0, 80),
               "' but the archive has no record '", name.substr(0, 120), "'");
    const uint64_t element = c10::elementSize(dtype);
    uint64_t bytes = 0;
    VOLT_CHECK(
        !__builtin_mul_overflow(static_cast<uint64_t>(numel), element, &bytes) && bytes <= record->size, "'",
        path, "': storage '", key, "' claims ", numel, " elements of ", c10::toString(dtype),
        " but its record holds only ", record->size, " bytes (truncated or corrupt)");
    return file->tensor(zip.data(*record), {numel}, dtype).storage();
  };
  detail::UnpickleOptions unpickle_options;
  unpickle_options.strict = strict;
  return detail::unpickle(zip.data(*pickle), pickle->size, load, "'" + path + "' (" + pickle->name + ")",
                          unpickle_options);
}

void write_torch_archive(const ZipWriter::Sink& sink, const Value& value, const TensorStreamHooks& hooks,
                         const std::string& path) {
  std::vector<detail::PickledStorage> storages;
  const std::string pickled =
      detail::pickle(value, &storages, /*allow_meta=*/static_cast<bool>(hooks.materialize));
  detail::ZipWriter zip(sink);
  const std::string prefix = "archive/";
  zip.add(prefix + "data.pkl", pickled.data(), pickled.size());
  zip.add(prefix + "byteorder", "little", 6);
  for (const auto& saved : storages) {
    // The whole storage, as bytes: views of it are rebuilt from their offsets and strides.
    const int64_t element = static_cast<int64_t>(c10::elementSize(saved.dtype));
    const int64_t numel = static_cast<int64_t>(saved.storage.nbytes()) / element;
    at::Tensor whole = at::empty({0}, at::TensorOptions().dtype(saved.dtype).device(saved.storage.device()));
    whole.set_(saved.storage, 0, {numel}, {1});
    at::Tensor host;
    if (whole.is_meta()) {
      host = hooks.materialize(whole).contiguous();
      VOLT_CHECK(host.device().is_cpu() && host.scalar_type() == whole.scalar_type() && host.numel() == numel,
                 "cannot save '", path, "': the data streamed for storage ", saved.key,
                 " does not match its dtype and size");
    } else {
      host = whole.device().is_cpu() ? whole : whole.cpu();
    }
    zip.add(prefix + "data/" + saved.key, numel > 0 ? host.data_ptr() : "",
            static_cast<uint64_t>(numel * element));
    if (hooks.written) hooks.written(whole);
  }
  zip.add(prefix + "version", "3\n", 2);
  zip.finish();
}

}  // namespace detail

TorchFileReader::TorchFileReader(const std::string& path, const TorchReadOptions& options) : path_(path) {
  mapping_ = detail::MappedFile::open(path, "PyTorch file");
  contents_ = detail::read_torch_archive(mapping_, mapping_->data(), mapping_->size(), path, options.strict_,
                                         &records_);
}

std::vector<std::string> TorchFileReader::records() const { return records_; }

bool TorchFileReader::release_pages(const at::Tensor& tensor) const {
  return mapping_->release_pages(tensor);
}

void save_torch_file(const std::string& path, const Value& value, const TorchWriteOptions& options) {
  write_file_atomically(path, [&](AtomicFileWriter& out) {
    detail::write_torch_archive([&out](const void* data, uint64_t size) { out.write(data, size); }, value,
                                options.hooks_, path);
  });
}

std::string torch_save_bytes(const Value& value) {
  std::string bytes;
  detail::write_torch_archive(
      [&bytes](const void* data, uint64_t size) { bytes.append(static_cast<const char*>(data), size); },
      value, {}, "a torch.save stream");
  return bytes;
}

}  // namespace volt
