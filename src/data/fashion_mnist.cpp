#include "volt/data/fashion_mnist.h"

#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>

#include "volt/error.h"

namespace volt::data {

const char* const FashionMNIST::kClassNames[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

namespace {

struct GzFile {
  explicit GzFile(const std::string& path) : file(gzopen(path.c_str(), "rb")) {}
  ~GzFile() {
    if (file != nullptr) gzclose(file);
  }
  gzFile file;
};

void read_exactly(GzFile& in, void* data, size_t bytes, const std::string& path, const char* what) {
  auto* out = static_cast<unsigned char*>(data);
  while (bytes > 0) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes, 1u << 30));
    const int n = gzread(in.file, out, chunk);
    VOLT_CHECK(n > 0, "'", path, "' ends inside its ", what, ": the file is truncated or not an IDX file");
    out += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace

at::Tensor read_idx_file(const std::string& path) {
  GzFile in(path);
  VOLT_CHECK(in.file != nullptr, "cannot open '", path, "'");
  unsigned char magic[4];
  read_exactly(in, magic, 4, path, "header");
  VOLT_CHECK(magic[0] == 0 && magic[1] == 0, "'", path, "' is not an IDX file (bad magic)");
  VOLT_CHECK(magic[2] == 0x08, "'", path, "' holds IDX type 0x", std::hex, int(magic[2]),
             ": volt reads unsigned-byte IDX files (type 0x08)");
  const int dims = magic[3];
  VOLT_CHECK(dims >= 1 && dims <= 4, "'", path, "' declares ", dims, " dimensions: expected 1 to 4");
  std::vector<int64_t> sizes;
  int64_t numel = 1;
  for (int i = 0; i < dims; ++i) {
    unsigned char b[4];
    read_exactly(in, b, 4, path, "header");
    const int64_t n = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
    sizes.push_back(n);
    numel *= n;
    // Nothing is allocated on a length from the file that the file could not hold.
    VOLT_CHECK(numel <= (int64_t(1) << 32), "'", path, "' declares ", numel,
               " elements: not a real IDX file");
  }
  at::Tensor out = torch::empty(sizes, torch::kUInt8);
  read_exactly(in, out.data_ptr(), static_cast<size_t>(numel), path, "data");
  unsigned char extra;
  VOLT_CHECK(gzread(in.file, &extra, 1) == 0, "'", path, "' has bytes after its declared data");
  return out;
}

FashionMNIST::FashionMNIST(Split split, const std::string& root) {
  const std::string prefix = split == kTrain ? "train" : "t10k";
  auto file = [&](const char* kind) {
    const std::string path = root + "/" + prefix + "-" + kind + ".gz";
    VOLT_CHECK(std::filesystem::exists(path), "Fashion-MNIST file '", path,
               "' is missing: install Debian's package with `apt-get install dataset-fashion-mnist` (or pass "
               "the folder that holds the IDX files)");
    return path;
  };
  const at::Tensor images = read_idx_file(file("images-idx3-ubyte"));
  const at::Tensor labels = read_idx_file(file("labels-idx1-ubyte"));
  VOLT_CHECK(images.dim() == 3 && images.size(1) == 28 && images.size(2) == 28, "'", root,
             "': Fashion-MNIST images are 28x28, these are ", images.sizes());
  VOLT_CHECK(labels.dim() == 1 && labels.size(0) == images.size(0), "'", root, "': ", labels.numel(),
             " labels for ", images.size(0), " images");
  VOLT_CHECK(labels.max().item<int64_t>() < 10, "'", root, "': labels must lie in 0..9");
  images_ = images.unsqueeze(1).to(torch::kFloat32).div_(255.0);
  labels_ = labels.to(torch::kInt64);
}

FashionMNIST FashionMNIST::subset(int64_t begin, int64_t end) const {
  VOLT_CHECK(0 <= begin && begin <= end && end <= labels_.size(0), "FashionMNIST::subset(", begin, ", ", end,
             ") is outside the ", labels_.size(0), " examples");
  FashionMNIST out;
  out.images_ = images_.slice(0, begin, end);
  out.labels_ = labels_.slice(0, begin, end);
  return out;
}

FashionMNIST& FashionMNIST::normalize(double mean, double std) {
  images_.sub_(mean).div_(std);
  return *this;
}

torch::data::Example<> FashionMNIST::get_batch(c10::ArrayRef<size_t> indices) {
  const auto index = torch::from_blob(const_cast<size_t*>(indices.data()),
                                      {static_cast<int64_t>(indices.size())}, torch::kInt64)
                         .clone();
  return {images_.index_select(0, index), labels_.index_select(0, index)};
}

}  // namespace volt::data
