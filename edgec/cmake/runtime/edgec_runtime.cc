// edgec_runtime.cc: the C API of edgec_runtime.h over TVM's C++ runtime (libtvm_runtime
// and libtvm_ffi from the apache-tvm and apache-tvm-ffi wheels).
//
// Opening an artifact does, in the order of edgec/artifact.py and edgec/runtime.py:
//  1. walks the tar headers: regular files only, plain member names, no duplicates,
//     nothing past the end of the bytes;
//  2. reads manifest.json (at most 4 MiB, 32 levels deep) and checks it against
//     manifest.sha256, the format and its version (1 or 2);
//  3. checks the tar holds exactly the members the manifest lists, at the sizes it
//     records, every library and weights.bin among them, every weight inside
//     weights.bin; then hashes each member against its recorded sha256;
//  4. refuses an artifact for another architecture, for CPU features this machine
//     lacks, or with a partition on a GPU;
//  5. per partition, writes its library to a private temp dir (0700, file 0600), loads
//     it, deletes it, and makes a Relax VM on the CPU over it;
//  6. views each weight in place (or one aligned copy of weights.bin when the bytes
//     given are not 64-byte aligned where TVM's generated code needs it).
// A run calls each partition's main(inputs..., weights...) in order, handing the
// tensors that cross between partitions by name.
#include "edgec_runtime.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#ifdef EDGEC_RUNTIME_WITH_OPENSSL
#include <openssl/evp.h>
#include <openssl/pem.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr const char* kFormat = "edgec-artifact";
constexpr size_t kAlignment = 64;
constexpr size_t kBlock = 512;
constexpr size_t kMaxManifestBytes = 4 << 20;
constexpr int kMaxDepth = 32;
constexpr size_t kMaxMembers = 1024;
constexpr const char* kManifest = "manifest.json";
constexpr const char* kDigest = "manifest.sha256";
constexpr const char* kSignature = "manifest.sig";
constexpr const char* kLibrary = "model.so";
constexpr const char* kWeights = "weights.bin";

thread_local std::string last_error;

/*! \brief A failure with its status; the message is one line naming the artifact. */
struct Failure : std::runtime_error {
  edgec_status status;
  Failure(edgec_status s, const std::string& message) : std::runtime_error(message), status(s) {}
};

Failure Bad(const std::string& message) { return Failure(EDGEC_ERROR_ARTIFACT, message); }

// ---------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for the manifest digest and the members' recorded hashes.
// ---------------------------------------------------------------------------------

class Sha256 {
 public:
  Sha256() { std::memcpy(h_, kInit, sizeof h_); }
  void Update(const uint8_t* data, size_t size) {
    length_ += size;
    if (used_) {
      size_t take = std::min(size, sizeof block_ - used_);
      std::memcpy(block_ + used_, data, take);
      used_ += take, data += take, size -= take;
      if (used_ < sizeof block_) return;
      Compress(block_);
      used_ = 0;
    }
    for (; size >= 64; data += 64, size -= 64) Compress(data);
    std::memcpy(block_, data, size);
    used_ = size;
  }
  std::string HexDigest() {
    uint64_t bits = length_ * 8;
    uint8_t pad[72] = {0x80};
    size_t pad_len = (used_ < 56 ? 56 : 120) - used_;
    for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    Update(pad, pad_len + 8);
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (uint32_t word : h_)
      for (int shift = 28; shift >= 0; shift -= 4) out += hex[(word >> shift) & 15];
    return out;
  }

 private:
  static constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  static constexpr uint32_t kRound[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  static uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void Compress(const uint8_t* p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[i] + w[i];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint32_t h_[8];
  uint8_t block_[64];
  size_t used_ = 0;
  uint64_t length_ = 0;
};

std::string Sha256Hex(const uint8_t* data, size_t size) {
  Sha256 hash;
  hash.Update(data, size);
  return hash.HexDigest();
}

// ---------------------------------------------------------------------------------
// The bytes: a read-only map of a file, or memory the caller keeps alive.
// ---------------------------------------------------------------------------------

struct Bytes {
  std::string name;  // for messages
  const uint8_t* data = nullptr;
  size_t size = 0;
  bool mapped = false;
  ~Bytes() {
    if (mapped && data) munmap(const_cast<uint8_t*>(data), size);
  }
};

std::shared_ptr<Bytes> MapFile(const char* path) {
  auto bytes = std::make_shared<Bytes>();
  bytes->name = path;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Bad(std::string(path) + ": no such artifact (" + std::strerror(errno) + ")");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    throw Bad(std::string(path) + ": no such artifact (not a regular file)");
  }
  bytes->size = static_cast<size_t>(st.st_size);
  if (bytes->size > 0) {
    void* data = mmap(nullptr, bytes->size, PROT_READ, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED) {
      int err = errno;
      close(fd);
      throw Bad(std::string(path) + ": cannot map: " + std::strerror(err));
    }
    bytes->data = static_cast<const uint8_t*>(data);
    bytes->mapped = true;
  }
  close(fd);
  return bytes;
}

// ---------------------------------------------------------------------------------
// The tar headers, checked before any member's data is used.
// ---------------------------------------------------------------------------------

struct Member {
  size_t offset;
  size_t size;
};

/*! \brief edgec/artifact.py's MEMBER_NAME: one plain file name, never "..". */
bool ValidMemberName(const std::string& name) {
  if (name.empty() || name.size() > 100 || name.find("..") != std::string::npos) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool word = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!(word || (i > 0 && (c == '.' || c == '-')))) return false;
  }
  return true;
}

uint64_t ParseOctal(const uint8_t* field, size_t width, bool* ok) {
  uint64_t value = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  bool digits = false;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i, digits = true) {
    if (value >> 60) *ok = false;
    value = value * 8 + (field[i] - '0');
  }
  for (; i < width; ++i)
    if (field[i] != '\0' && field[i] != ' ') *ok = false;
  if (!digits) *ok = false;
  return value;
}

/*! \brief A header's 12-byte size: octal, or GNU's base-256 (first byte 0x80) for 8 GiB and over. */
uint64_t SizeField(const uint8_t* field, bool* ok) {
  if (field[0] != 0x80) return ParseOctal(field, 12, ok);
  uint64_t value = 0;
  for (int i = 1; i < 12; ++i) {
    if (value >> 56) *ok = false;
    value = value << 8 | field[i];
  }
  return value;
}

std::string CString(const uint8_t* field, size_t width) {
  size_t n = 0;
  while (n < width && field[n] != '\0') ++n;
  return std::string(reinterpret_cast<const char*>(field), n);
}

std::string Quoted(const std::string& name) {
  std::string out = "'";
  for (unsigned char c : name) {
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

std::map<std::string, Member> ReadHeaders(const Bytes& bytes) {
  std::map<std::string, Member> members;
  const std::string& path = bytes.name;
  size_t pos = 0;
  while (pos + kBlock <= bytes.size) {
    const uint8_t* header = bytes.data + pos;
    bool zero = true;
    for (size_t i = 0; i < kBlock && zero; ++i) zero = header[i] == 0;
    if (zero) break;  // end of archive
    bool ok = true;
    uint64_t recorded = ParseOctal(header + 148, 8, &ok);
    uint64_t sum = 0;
    for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : header[i];
    if (!ok || recorded != sum) {
      throw Bad(path + ": not an edgec artifact (bad tar header checksum at byte " + std::to_string(pos) + ")");
    }
    uint64_t size = SizeField(header + 124, &ok);
    if (!ok) throw Bad(path + ": not an edgec artifact (bad tar member size at byte " + std::to_string(pos) + ")");
    std::string name = CString(header, 100);
    std::string prefix = memcmp(header + 257, "ustar", 5) == 0 ? CString(header + 345, 155) : "";
    if (!prefix.empty()) name = prefix + "/" + name;
    if (!ValidMemberName(name)) {
      throw Bad(path + ": member " + Quoted(name) +
                " has an invalid name (a plain file name is required: no path separators, no '..', not absolute)");
    }
    char type = static_cast<char>(header[156]);
    if (type != '0' && type != '\0') {
      throw Bad(path + ": member '" + name + "' is not a regular file (links and special files are refused)");
    }
    if (members.count(name)) throw Bad(path + ": member '" + name + "' appears twice");
    size_t data = pos + kBlock;
    if (size > bytes.size - data) {
      throw Bad(path + ": member '" + name + "' is truncated (the file ends before its " + std::to_string(size) +
                " bytes)");
    }
    members[name] = Member{data, static_cast<size_t>(size)};
    if (members.size() > kMaxMembers) throw Bad(path + ": more than " + std::to_string(kMaxMembers) + " members");
    pos = data + (size + kBlock - 1) / kBlock * kBlock;
  }
  if (pos + kBlock > bytes.size && pos < bytes.size) {
    throw Bad(path + ": not an edgec artifact (truncated tar header at byte " + std::to_string(pos) + ")");
  }
  return members;
}

/*! \brief The deepest bracket nesting of a JSON text outside strings (before parsing,
 *  which recurses). */
int JsonDepth(const char* text, size_t size) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < size; ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// ---------------------------------------------------------------------------------
// Manifest access: the parsed JSON is Map<Any, Any> / Array<Any> / String / int64.
// ---------------------------------------------------------------------------------

struct Manifest {
  std::string path;
  ffi::json::Object root;

  bool Has(const ffi::json::Object& object, const char* key) const {
    return object.find(ffi::String(key)) != object.end();
  }
  ffi::Any Get(const ffi::json::Object& object, const char* key, const std::string& where) const {
    auto it = object.find(ffi::String(key));
    if (it == object.end()) throw Bad(path + ": manifest has no '" + where + key + "'");
    return (*it).second;
  }
  ffi::json::Object Object(const ffi::Any& value, const std::string& what) const {
    if (auto object = value.try_cast<ffi::json::Object>()) return *object;
    throw Bad(path + ": manifest '" + what + "' is not an object");
  }
  ffi::json::Array List(const ffi::Any& value, const std::string& what) const {
    if (auto array = value.try_cast<ffi::json::Array>()) return *array;
    throw Bad(path + ": manifest '" + what + "' is not a list");
  }
  std::string Str(const ffi::Any& value, const std::string& what) const {
    if (auto text = value.try_cast<ffi::String>()) return std::string(*text);
    throw Bad(path + ": manifest '" + what + "' is not a string");
  }
  int64_t Int(const ffi::Any& value, const std::string& what) const {
    if (value.type_index() == ffi::TypeIndex::kTVMFFIInt) return value.cast<int64_t>();
    throw Bad(path + ": manifest '" + what + "' is not an integer");
  }
  std::vector<std::string> Names(const ffi::Any& value, const std::string& what) const {
    std::vector<std::string> names;
    for (const ffi::Any& item : List(value, what)) names.push_back(Str(item, what + "[]"));
    return names;
  }
};

/*! \brief A signature tensor or a weight, with what the C API hands out. */
struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  DLDataType dl{};
  size_t nbytes = 0;
  int64_t offset = 0;  // weights only
  std::string valid_rows;  // outputs only: the output holding how many leading rows are real
  bool count_of_rows = false;  // outputs only: such a count (the runtime's, not the caller's)
};

/*! \brief The byte size of `shape` in `dtype`, or false when a dim is negative or it overflows. */
bool ByteSize(DLDataType dtype, const std::vector<int64_t>& shape, size_t* out) {
  size_t count = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(count, static_cast<size_t>(d), &count)) return false;
  }
  size_t bits;
  if (__builtin_mul_overflow(count, static_cast<size_t>(dtype.bits) * dtype.lanes, &bits)) return false;
  *out = (bits + 7) / 8;
  return true;
}

bool ParseDtype(const std::string& text, DLDataType* out) {
  try {
    *out = ffi::StringToDLDataType(ffi::String(text));
    return out->lanes == 1 && out->bits > 0;
  } catch (const std::exception&) {
    return false;
  }
}

std::vector<TensorSpec> Signature(const Manifest& m, const ffi::Any& list, const std::string& what) {
  std::vector<TensorSpec> specs;
  for (const ffi::Any& item : m.List(list, what)) {
    ffi::json::Object entry = m.Object(item, what + "[]");
    TensorSpec spec;
    spec.name = m.Str(m.Get(entry, "name", what + "[]."), what + "[].name");
    spec.dtype = m.Str(m.Get(entry, "dtype", what + "[]."), what + "[].dtype");
    if (m.Has(entry, "valid_rows") && m.Get(entry, "valid_rows", "").type_index() != ffi::TypeIndex::kTVMFFINone) {
      spec.valid_rows = m.Str(m.Get(entry, "valid_rows", ""), what + "[].valid_rows");
    }
    if (m.Has(entry, "count_of_rows")) {
      ffi::Any flag = m.Get(entry, "count_of_rows", "");
      if (flag.type_index() != ffi::TypeIndex::kTVMFFIBool) {
        throw Bad(m.path + ": manifest '" + what + "[].count_of_rows' is not a boolean");
      }
      spec.count_of_rows = flag.cast<bool>();
    }
    for (const ffi::Any& dim : m.List(m.Get(entry, "shape", what + "[]."), what + "[].shape")) {
      spec.shape.push_back(m.Int(dim, what + "[].shape"));
    }
    if (!ParseDtype(spec.dtype, &spec.dl) || !ByteSize(spec.dl, spec.shape, &spec.nbytes)) {
      throw Bad(m.path + ": manifest " + what + " '" + spec.name + "' has a bad dtype or shape");
    }
    specs.push_back(spec);
  }
  return specs;
}

/*! \brief An output cut to the rows the data decides names an int64 [1] count output, and has rows. */
void CheckRowCount(const Manifest& m, const std::vector<TensorSpec>& outputs, const TensorSpec& spec) {
  for (const TensorSpec& count : outputs) {
    if (count.name == spec.valid_rows && count.count_of_rows && count.dtype == "int64" && count.shape.size() == 1 &&
        count.shape[0] == 1 && !spec.shape.empty()) {
      return;
    }
  }
  throw Bad(m.path + ": output '" + spec.name + "' is cut to the rows counted by '" + spec.valid_rows +
            "', which is not an int64 [1] count output of the manifest");
}

/*! \brief edgec/artifact.py's check_weight_index: each weight agrees with itself and lies,
 *  64-byte aligned, inside weights.bin. */
std::vector<TensorSpec> WeightIndex(const Manifest& m, size_t blob_size) {
  auto it = m.root.find(ffi::String("weights"));
  auto list = it == m.root.end() ? ffi::Optional<ffi::json::Array>() : (*it).second.try_cast<ffi::json::Array>();
  if (!list) throw Bad(m.path + ": manifest 'weights' is not a list");
  std::vector<TensorSpec> weights;
  for (const ffi::Any& item : *list) {
    TensorSpec w;
    bool ok = false;
    if (auto entry = item.try_cast<ffi::json::Object>()) {
      auto field = [&](const char* key) {
        auto found = entry->find(ffi::String(key));
        return found == entry->end() ? ffi::Any() : (*found).second;
      };
      if (auto name = field("name").try_cast<ffi::String>()) w.name = std::string(*name);
      auto dtype = field("dtype").try_cast<ffi::String>();
      auto shape = field("shape").try_cast<ffi::json::Array>();
      ffi::Any offset = field("offset"), nbytes = field("nbytes");
      ok = dtype && shape && offset.type_index() == ffi::TypeIndex::kTVMFFIInt &&
           nbytes.type_index() == ffi::TypeIndex::kTVMFFIInt;
      if (ok) {
        w.dtype = std::string(*dtype);
        for (const ffi::Any& dim : *shape) {
          if (dim.type_index() != ffi::TypeIndex::kTVMFFIInt) ok = false;
          else w.shape.push_back(dim.cast<int64_t>());
        }
        w.offset = offset.cast<int64_t>();
        int64_t size = nbytes.cast<int64_t>();
        ok = ok && ParseDtype(w.dtype, &w.dl) && ByteSize(w.dl, w.shape, &w.nbytes) && w.offset >= 0 &&
             size >= 0 && static_cast<size_t>(size) == w.nbytes && static_cast<size_t>(w.offset) <= blob_size &&
             w.nbytes <= blob_size - static_cast<size_t>(w.offset) && w.offset % kAlignment == 0;
      }
    }
    if (!ok) {
      throw Bad(m.path + ": manifest weight '" + w.name + "' does not fit member '" + kWeights +
                "' (bad dtype, shape, offset or size)");
    }
    weights.push_back(w);
  }
  return weights;
}

struct MemberEntry {
  std::string sha256;
  size_t size;
};

/*! \brief edgec/artifact.py's check_members: exactly the listed members at the recorded sizes. */
std::map<std::string, MemberEntry> CheckMembers(const Manifest& m, const std::map<std::string, Member>& headers) {
  auto it = m.root.find(ffi::String("members"));
  auto listed = it == m.root.end() ? ffi::Optional<ffi::json::Object>() : (*it).second.try_cast<ffi::json::Object>();
  if (!listed) throw Bad(m.path + ": member '" + kManifest + "' has no member list");
  std::map<std::string, MemberEntry> members;
  for (const auto& [key, value] : *listed) {
    auto name = key.try_cast<ffi::String>();
    auto entry = value.try_cast<ffi::json::Object>();
    std::string text = name ? std::string(*name) : "?";
    bool ok = name && ValidMemberName(text) && entry;
    MemberEntry parsed{"", 0};
    if (ok) {
      auto size = entry->find(ffi::String("size"));
      auto sha = entry->find(ffi::String("sha256"));
      ok = size != entry->end() && (*size).second.type_index() == ffi::TypeIndex::kTVMFFIInt &&
           (*size).second.cast<int64_t>() >= 0 && sha != entry->end() &&
           (*sha).second.try_cast<ffi::String>().has_value();
      if (ok) {
        parsed.size = static_cast<size_t>((*size).second.cast<int64_t>());
        parsed.sha256 = std::string((*sha).second.cast<ffi::String>());
        ok = parsed.sha256.size() == 64 &&
             parsed.sha256.find_first_not_of("0123456789abcdef") == std::string::npos;
      }
    }
    if (!ok) throw Bad(m.path + ": manifest entry for member " + Quoted(text) + " is invalid");
    auto header = headers.find(text);
    if (header == headers.end()) throw Bad(m.path + ": artifact is missing member(s) " + text);
    if (header->second.size != parsed.size) {
      throw Bad(m.path + ": member '" + text + "' is " + std::to_string(header->second.size) +
                " bytes in the tar, the manifest says " + std::to_string(parsed.size));
    }
    members[text] = parsed;
  }
  for (const auto& [name, member] : headers) {
    if (!members.count(name) && name != kManifest && name != kDigest && name != kSignature) {
      throw Bad(m.path + ": member '" + name + "' is not listed in the manifest");
    }
  }
  return members;
}

// ---------------------------------------------------------------------------------
// Can this machine run it? The same checks, and messages, as edgec/runtime.py.
// ---------------------------------------------------------------------------------

std::string NormalizeMachine(std::string machine) {
  for (char& c : machine) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (machine == "arm64") return "aarch64";
  if (machine == "amd64") return "x86_64";
  return machine;
}

#if defined(__aarch64__) && defined(__linux__)
// Bit order of arm64 AT_HWCAP / AT_HWCAP2 (Linux arch/arm64/include/uapi/asm/hwcap.h).
const char* const kHwcap[] = {"fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics",
                              "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3",
                              "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc",
                              "flagm", "ssbs", "sb", "paca", "pacg"};
const char* const kHwcap2[] = {"dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4",
                               "flagm2", "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16",
                               "dgh", "rng", "bti", "mte"};

std::set<std::string> CpuFeatures() {
  std::set<std::string> features;
  unsigned long bits = getauxval(AT_HWCAP), bits2 = getauxval(AT_HWCAP2);
  for (size_t i = 0; i < sizeof(kHwcap) / sizeof(*kHwcap); ++i)
    if (bits >> i & 1) features.insert(kHwcap[i]);
  for (size_t i = 0; i < sizeof(kHwcap2) / sizeof(*kHwcap2); ++i)
    if (bits2 >> i & 1) features.insert(kHwcap2[i]);
  return features;
}
#endif

void CheckMachine(const Manifest& m) {
  ffi::json::Object target = m.Object(m.Get(m.root, "target", ""), "target");
  std::string name = m.Str(m.Get(target, "name", "target."), "target.name");
  std::string triple = m.Str(m.Get(target, "triple", "target."), "target.triple");
  struct utsname host;
  uname(&host);
  if (triple.substr(0, triple.find('-')) != NormalizeMachine(host.machine)) {
    throw Bad(m.path + ": built for " + triple + " (target " + name + "), but this machine is " + host.machine +
              "; run it on the device");
  }
#if defined(__aarch64__) && defined(__linux__)
  // Code using a missing extension dies of SIGILL, not an error: refuse it up front.
  std::set<std::string> available = CpuFeatures();
  std::string missing;
  if (m.Has(target, "features")) {
    for (const std::string& f : m.Names(m.Get(target, "features", "target."), "target.features")) {
      if (!available.count(f)) missing += (missing.empty() ? "" : ", ") + f;
    }
  }
  if (!missing.empty()) {
    throw Bad(m.path + ": this machine lacks CPU feature(s) " + missing + " required by target " + name);
  }
#endif
}

/*! \brief TVM's pool uses one thread on a 2-core machine unless told: use the physical cores,
 *  as edgec's Python runtime does, unless TVM_NUM_THREADS is already set. And, unless the
 *  environment says otherwise, leave its threads unpinned and let a thread waiting at the end of a
 *  kernel spin 1,000 times, not 300,000, before it sleeps: with one other busy process on the
 *  machine, spinning pinned threads stall every kernel (see edgec/runtime/tvm_runtime.py). */
void SetThreads() {
  setenv("TVM_BIND_THREADS", "0", 0);
  setenv("TVM_THREAD_POOL_SPIN_COUNT", "1000", 0);
  if (std::getenv("TVM_NUM_THREADS")) return;
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0) return;
  std::set<std::string> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &cpus)) continue;
    std::string topology = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package(topology + "physical_package_id"), core(topology + "core_id");
    std::string p, c;
    if (package >> p && core >> c) cores.insert(p + ":" + c);
    else cores.insert("?:" + std::to_string(cpu));
  }
  setenv("TVM_NUM_THREADS", std::to_string(cores.empty() ? 1 : cores.size()).c_str(), 0);
}

// ---------------------------------------------------------------------------------
// Tensors and partitions.
// ---------------------------------------------------------------------------------

constexpr DLDevice kCPU{kDLCPU, 0};

/*! \brief Owns 64-byte-aligned host memory for a tensor. */
struct AlignedAlloc {
  void AllocData(DLTensor* tensor) {
    size_t size = ffi::GetDataSize(*tensor);
    tensor->data = std::aligned_alloc(kAlignment, (size + kAlignment - 1) / kAlignment * kAlignment + kAlignment);
    if (!tensor->data) throw std::bad_alloc();
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

/*! \brief Views memory it does not own, kept alive by `keep`. */
struct ViewAlloc {
  void* data;
  std::shared_ptr<void> keep;
  void AllocData(DLTensor* tensor) { tensor->data = data; }
  void FreeData(DLTensor*) {}
};

ffi::Shape ToShape(const std::vector<int64_t>& shape) { return ffi::Shape(shape.begin(), shape.end()); }

/*! \brief dlopen a library member from a fresh private directory, then delete both. */
ffi::Module LoadLibrary(const Bytes& bytes, const Member& member, const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/edgec-rt-XXXXXX";
  if (!mkdtemp(dir.data())) {
    throw Failure(EDGEC_ERROR_RUN, "cannot make a temp dir under " + dir + ": " + std::strerror(errno));
  }
  std::string path = dir + "/library.so";
  auto cleanup = [&] {
    std::remove(path.c_str());
    rmdir(dir.c_str());
  };
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  bool written = fd >= 0;
  for (size_t done = 0; written && done < member.size;) {
    ssize_t n = write(fd, bytes.data + member.offset + done, member.size - done);
    if (n <= 0) written = false;
    else done += static_cast<size_t>(n);
  }
  if (fd >= 0 && close(fd) != 0) written = false;
  if (!written) {
    int err = errno;
    cleanup();
    throw Failure(EDGEC_ERROR_RUN, "cannot write " + path + ": " + std::strerror(err));
  }
  try {
    ffi::Module library = ffi::Module::LoadFromFile(path);
    cleanup();
    return library;
  } catch (const ffi::Error& error) {
    cleanup();
    throw Failure(EDGEC_ERROR_RUN, bytes.name + ": cannot load the compiled library " + name + ": " +
                                       std::string(error.message()));
  }
}

/*! \brief One partition: its Relax VM's main and the names it reads and writes. */
struct Stage {
  ffi::Module vm;  // keeps main's VM alive
  ffi::Function main;
  std::vector<std::string> inputs, outputs;
  std::vector<ffi::Tensor> weights;
};

}  // namespace

/*! \brief An input whose value is a shape the compile fixed (edgec/runtime.py's check_shape_input). */
struct ShapeInput {
  size_t input = 0;
  std::string node, op;
  std::vector<int64_t> data_shape, shape;
};

struct edgec_model {
  std::shared_ptr<Bytes> bytes;
  std::vector<ShapeInput> shape_inputs;
  std::shared_ptr<void> weight_copy;  // an aligned copy of weights.bin, when the bytes were not aligned
  std::vector<TensorSpec> inputs, outputs;  // outputs: the caller's, without the row counts
  std::vector<TensorSpec> produced;  // every output the libraries return, row counts included
  std::vector<ffi::Tensor> input_tensors;
  std::vector<bool> input_set;
  std::vector<ffi::Tensor> output_tensors;  // empty until a run
  std::vector<TensorSpec> ran;  // the outputs as the last run gave them: rows cut to their counts
  std::vector<Stage> stages;
};

namespace {

std::vector<int64_t> Sizes(const Manifest& m, const ffi::Any& list, const std::string& what) {
  std::vector<int64_t> sizes;
  for (const ffi::Any& item : m.List(list, what)) {
    sizes.push_back(m.Int(item, what + "[]"));
    if (sizes.back() < 0) throw Bad(m.path + ": manifest '" + what + "' has a negative size");
  }
  return sizes;
}

/*! \brief target.shape_inputs: each names an int64 vector input of the signature. */
std::vector<ShapeInput> ShapeInputs(const Manifest& m, const std::vector<TensorSpec>& inputs) {
  ffi::json::Object target = m.Object(m.Get(m.root, "target", ""), "target");
  std::vector<ShapeInput> pinned;
  if (!m.Has(target, "shape_inputs")) return pinned;
  for (const ffi::Any& item : m.List(m.Get(target, "shape_inputs", "target."), "target.shape_inputs")) {
    ffi::json::Object entry = m.Object(item, "target.shape_inputs[]");
    const std::string what = "target.shape_inputs[].";
    std::string name = m.Str(m.Get(entry, "input", what), what + "input");
    ShapeInput p;
    p.input = std::find_if(inputs.begin(), inputs.end(), [&](const TensorSpec& s) { return s.name == name; }) - inputs.begin();
    if (p.input == inputs.size() || inputs[p.input].dtype != "int64" || inputs[p.input].shape.size() != 1) {
      throw Bad(m.path + ": manifest '" + what + "input' is not an int64 vector input of the model");
    }
    p.node = m.Str(m.Get(entry, "node", what), what + "node");
    p.op = m.Str(m.Get(entry, "op", what), what + "op");
    p.data_shape = Sizes(m, m.Get(entry, "data_shape", what), what + "data_shape");
    p.shape = Sizes(m, m.Get(entry, "shape", what), what + "shape");
    pinned.push_back(p);
  }
  return pinned;
}

std::string Dims(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

/*! \brief Refuse a shape value that gives the node another output shape than it was compiled for. */
void CheckShapeInput(const edgec_model& model, const ShapeInput& p) {
  const ffi::Tensor& tensor = model.input_tensors[p.input];
  const int64_t* data = static_cast<const int64_t*>(tensor.data_ptr());
  std::vector<int64_t> value(data, data + tensor.numel());
  size_t rank = std::max(value.size(), p.data_shape.size());
  std::vector<int64_t> shape(rank);
  bool broadcasts = true;
  for (size_t i = 0; i < rank; ++i) {  // numpy's rule, aligned at the last axis
    int64_t a = i < rank - p.data_shape.size() ? 1 : p.data_shape[i - (rank - p.data_shape.size())];
    int64_t b = i < rank - value.size() ? 1 : value[i - (rank - value.size())];
    broadcasts &= a == b || a == 1 || b == 1;
    shape[i] = a == 1 ? b : a;
  }
  if (!broadcasts || shape != p.shape) {
    throw Failure(EDGEC_ERROR_USAGE, "input '" + model.inputs[p.input].name + "' = " + Dims(value) +
                (broadcasts ? " gives " + p.op + " node '" + p.node + "' shape " + Dims(shape)
                            : " does not broadcast with " + p.op + " node '" + p.node + "''s input " + Dims(p.data_shape)) +
                "; this artifact was compiled for shape " + Dims(p.shape) + " (its value is a shape, fixed at compile time)");
  }
}

/*! \brief The manifest's partition list, or none for a one-library artifact (no list, null
 *  or empty, as edgec/artifact.py reads it); anything but a list of objects is refused. */
ffi::Optional<ffi::json::Array> Partitions(const Manifest& m) {
  auto it = m.root.find(ffi::String("partitions"));
  if (it == m.root.end() || (*it).second == nullptr) return std::nullopt;
  auto list = (*it).second.try_cast<ffi::json::Array>();
  bool ok = list.has_value();
  for (size_t i = 0; ok && i < list->size(); ++i) ok = (*list)[i].try_cast<ffi::json::Object>().has_value();
  if (!ok) throw Bad(m.path + ": manifest 'partitions' is invalid");
  if (list->empty()) return std::nullopt;
  return list;
}

std::vector<Stage> LoadStages(const Manifest& m, const Bytes& bytes, const std::map<std::string, Member>& headers,
                              const std::map<std::string, ffi::Tensor>& weights,
                              const std::vector<TensorSpec>& inputs, const std::vector<TensorSpec>& outputs) {
  std::vector<Stage> stages;
  constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR
  auto make = [&](const std::string& library, std::vector<std::string> in, std::vector<std::string> out,
                  const std::vector<std::string>& weight_names) {
    ffi::Module module = LoadLibrary(bytes, headers.at(library), library);
    ffi::Optional<ffi::Function> load_executable = module->GetFunction("vm_load_executable");
    if (!load_executable) throw Bad(m.path + ": " + library + " is not a Relax VM executable");
    ffi::Module vm = (*load_executable)().cast<ffi::Module>();
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
    Stage stage{vm, vm->GetFunction("main").value(), std::move(in), std::move(out), {}};
    for (const std::string& name : weight_names) {
      auto found = weights.find(name);
      if (found == weights.end()) throw Bad(m.path + ": partition " + library + " uses unknown weight '" + name + "'");
      stage.weights.push_back(found->second);
    }
    stages.push_back(std::move(stage));
  };
  ffi::Optional<ffi::json::Array> partitions = Partitions(m);
  if (!partitions) {  // format 1: model.so takes the signature's inputs, then every weight
    std::vector<std::string> in, out, names;
    for (const TensorSpec& s : inputs) in.push_back(s.name);
    for (const TensorSpec& s : outputs) out.push_back(s.name);
    for (const ffi::Any& w : m.List(m.Get(m.root, "weights", ""), "weights")) {
      names.push_back(m.Str(m.Get(m.Object(w, "weights[]"), "name", "weights[]."), "weights[].name"));
    }
    make(kLibrary, in, out, names);
    return stages;
  }
  for (const ffi::Any& item : *partitions) {
    ffi::json::Object p = m.Object(item, "partitions[]");
    std::string library = m.Str(m.Get(p, "library", "partitions[]."), "partitions[].library");
    make(library, m.Names(m.Get(p, "inputs", "partitions[]."), "partitions[].inputs"),
         m.Names(m.Get(p, "outputs", "partitions[]."), "partitions[].outputs"),
         m.Names(m.Get(p, "weights", "partitions[]."), "partitions[].weights"));
  }
  return stages;
}

/*! \brief Refuse unless member manifest.sig is an Ed25519 signature, by the public key in the
 *  PEM file key_path, of the manifest's sha256 (what 'edgec compile --sign' signs). */
void VerifySignature(const Bytes& bytes, const std::map<std::string, Member>& headers, const std::string& digest_hex,
                     const std::string& key_path) {
#ifdef EDGEC_RUNTIME_WITH_OPENSSL
  const std::string& path = bytes.name;
  auto sig = headers.find(kSignature);
  if (sig == headers.end()) {
    throw Bad(path + ": member '" + kSignature + "' is missing: the artifact is not signed (verifying with " +
              key_path + " requires 'edgec compile --sign')");
  }
  if (sig->second.size != 64) {
    throw Bad(path + ": member '" + kSignature + "' is " + std::to_string(sig->second.size) +
              " bytes, not an Ed25519 signature (64)");
  }
  uint8_t digest[32];
  for (int i = 0; i < 32; ++i) digest[i] = static_cast<uint8_t>(std::stoi(digest_hex.substr(2 * i, 2), nullptr, 16));
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(key_path.c_str(), "rb"), std::fclose);
  if (!file) throw Failure(EDGEC_ERROR_USAGE, key_path + ": " + std::strerror(errno));
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> key(PEM_read_PUBKEY(file.get(), nullptr, nullptr, nullptr),
                                                     EVP_PKEY_free);
  if (!key || EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) {
    throw Failure(EDGEC_ERROR_USAGE, key_path + ": not an Ed25519 public key in PEM ('edgec keygen' writes one)");
  }
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), bytes.data + sig->second.offset, sig->second.size, digest, sizeof digest) == 1;
  if (!ok) {
    throw Bad(path + ": member '" + kSignature + "' does not verify with " + key_path + ": signed by another key, "
              "or '" + kManifest + "' and '" + kDigest + "' were changed after signing");
  }
#else
  (void)bytes, (void)headers, (void)digest_hex;
  throw Failure(EDGEC_ERROR_USAGE, "cannot verify with " + key_path +
                ": this edgec runtime was built without OpenSSL (Debian: libssl-dev), so it checks no signatures");
#endif
}

std::unique_ptr<edgec_model> Open(std::shared_ptr<Bytes> bytes, const std::string& key_path = "") {
  const std::string& path = bytes->name;
  // 1. The tar headers.
  std::map<std::string, Member> headers = ReadHeaders(*bytes);
  auto manifest_member = headers.find(kManifest);
  if (manifest_member == headers.end()) throw Bad(path + ": not an edgec artifact (no edgec manifest)");
  const Member& mm = manifest_member->second;
  if (mm.size > kMaxManifestBytes) {
    throw Bad(path + ": member '" + kManifest + "' is " + std::to_string(mm.size) + " bytes, over the limit of " +
              std::to_string(kMaxManifestBytes));
  }

  // 2. The manifest and its digest.
  const char* text = reinterpret_cast<const char*>(bytes->data + mm.offset);
  int depth = JsonDepth(text, mm.size);
  if (depth > kMaxDepth) {
    throw Bad(path + ": member '" + kManifest + "' nests " + std::to_string(depth) + " levels deep, over the limit of " +
              std::to_string(kMaxDepth));
  }
  ffi::String json_error;
  ffi::json::Value parsed;
  try {
    parsed = ffi::json::Parse(ffi::String(text, mm.size), &json_error);
  } catch (const ffi::Error& error) {
    json_error = error.message();
  }
  auto root = parsed.try_cast<ffi::json::Object>();
  if (!json_error.empty() || !root) {
    throw Bad(path + ": not an edgec artifact (member '" + kManifest + "' is not JSON: " + std::string(json_error) + ")");
  }
  Manifest m{path, *root};
  auto format = m.root.find(ffi::String("format"));
  if (format == m.root.end() || (*format).second.try_cast<ffi::String>() != ffi::String(kFormat)) {
    throw Bad(path + ": not an edgec artifact (no edgec manifest)");
  }
  auto version = m.root.find(ffi::String("format_version"));
  int64_t v = version != m.root.end() && (*version).second.type_index() == ffi::TypeIndex::kTVMFFIInt
                  ? (*version).second.cast<int64_t>() : -1;
  if (v == 3) {
    throw Bad(path + ": microcontroller firmware (format version 3) runs on its board, or under qemu with "
              "'edgec run'; this runtime loads TVM libraries (format versions 1, 2)");
  }
  if (v != 1 && v != 2) {
    throw Bad(path + ": artifact format version " + (v < 0 ? std::string("None") : std::to_string(v)) +
              " is not supported (this edgec reads versions 1, 2, 3); recompile the model");
  }
  auto digest = headers.find(kDigest);
  if (digest == headers.end()) {
    throw Bad(path + ": member '" + kDigest + "' is missing (written by an older edgec, or tampered with); "
              "recompile the model");
  }
  std::string recorded(reinterpret_cast<const char*>(bytes->data + digest->second.offset),
                       std::min<size_t>(digest->second.size, 100));
  size_t first = recorded.find_first_not_of(" \t\r\n\v\f"), last = recorded.find_last_not_of(" \t\r\n\v\f");
  recorded = first == std::string::npos ? "" : recorded.substr(first, last - first + 1);
  if (recorded != Sha256Hex(bytes->data + mm.offset, mm.size)) {
    throw Bad(path + ": member '" + kManifest + "' is corrupt (its sha256 does not match '" + kDigest + "')");
  }
  if (!key_path.empty()) VerifySignature(*bytes, headers, recorded, key_path);  // before anything is loaded

  // 3. The members against the manifest.
  std::map<std::string, MemberEntry> members = CheckMembers(m, headers);
  ffi::Optional<ffi::json::Array> partitions = Partitions(m);
  std::vector<std::string> libraries;
  for (const ffi::Any& item : partitions ? *partitions : ffi::json::Array()) {
    ffi::json::Object p = item.cast<ffi::json::Object>();
    auto library = p.find(ffi::String("library"));
    libraries.push_back(library == p.end() ? "None" : m.Str((*library).second, "partitions[].library"));
  }
  if (!partitions) libraries.push_back(kLibrary);
  std::string missing;
  for (const std::string& name : libraries) {
    if (!members.count(name)) missing += (missing.empty() ? "" : ", ") + name;
  }
  if (!members.count(kWeights)) missing += (missing.empty() ? "" : ", ") + std::string(kWeights);
  if (!missing.empty()) throw Bad(path + ": artifact is missing member(s) " + missing);
  const Member& blob = headers.at(kWeights);
  std::vector<TensorSpec> weight_specs = WeightIndex(m, blob.size);
  for (const auto& [name, entry] : members) {
    const Member& member = headers.at(name);
    if (Sha256Hex(bytes->data + member.offset, member.size) != entry.sha256) {
      throw Bad(path + ": member '" + name + "' is corrupt (sha256 mismatch with the manifest)");
    }
  }

  // 4. This machine.
  CheckMachine(m);
  for (const ffi::Any& item : partitions ? *partitions : ffi::json::Array()) {
    ffi::json::Object p = item.cast<ffi::json::Object>();
    std::string runs_on = m.Str(m.Get(p, "runs_on", "partitions[]."), "partitions[].runs_on");
    if (runs_on != "cpu") {
      throw Bad(path + ": partition " + m.Str(m.Get(p, "library", "partitions[]."), "library") + " runs on " +
                runs_on + "; this runtime runs CPU partitions only");
    }
  }

  auto model = std::make_unique<edgec_model>();
  model->bytes = bytes;
  ffi::json::Object signature = m.Object(m.Get(m.root, "signature", ""), "signature");
  model->inputs = Signature(m, m.Get(signature, "inputs", "signature."), "signature.inputs");
  model->produced = Signature(m, m.Get(signature, "outputs", "signature."), "signature.outputs");
  for (const TensorSpec& spec : model->produced) {
    if (!spec.count_of_rows) model->outputs.push_back(spec);
    if (!spec.valid_rows.empty()) CheckRowCount(m, model->produced, spec);
  }
  model->shape_inputs = ShapeInputs(m, model->inputs);

  // 6 (before 5, so the stages take them). The weights, in place when aligned.
  const uint8_t* base = bytes->data + blob.offset;
  if (reinterpret_cast<uintptr_t>(base) % kAlignment != 0) {
    void* copy = std::aligned_alloc(kAlignment, (blob.size + kAlignment) / kAlignment * kAlignment);
    if (!copy) throw std::bad_alloc();
    std::memcpy(copy, base, blob.size);
    model->weight_copy = std::shared_ptr<void>(copy, std::free);
    base = static_cast<const uint8_t*>(copy);
  }
  std::shared_ptr<void> keep = model->weight_copy ? model->weight_copy : std::shared_ptr<void>(bytes);
  std::map<std::string, ffi::Tensor> weights;
  for (const TensorSpec& w : weight_specs) {
    void* data = const_cast<uint8_t*>(base + w.offset);
    weights[w.name] = ffi::Tensor::FromNDAlloc(ViewAlloc{data, keep}, ToShape(w.shape), w.dl, kCPU);
  }

  // 5. The partitions.
  SetThreads();
  model->stages = LoadStages(m, *bytes, headers, weights, model->inputs, model->produced);
  for (const TensorSpec& spec : model->inputs) {
    model->input_tensors.push_back(ffi::Tensor::FromNDAlloc(AlignedAlloc(), ToShape(spec.shape), spec.dl, kCPU));
  }
  model->input_set.assign(model->inputs.size(), false);
  return model;
}

edgec_status Fail(const Failure& failure) {
  last_error = failure.what();
  return failure.status;
}

/*! \brief Run `body`, turning every exception into a status and the thread's last error. */
template <typename Body>
edgec_status Guard(Body body) {
  try {
    body();
    last_error.clear();
    return EDGEC_OK;
  } catch (const Failure& failure) {
    return Fail(failure);
  } catch (const ffi::Error& error) {
    return Fail(Failure(EDGEC_ERROR_RUN, std::string(error.kind()) + ": " + std::string(error.message())));
  } catch (const std::bad_alloc&) {
    return Fail(Failure(EDGEC_ERROR_RUN, "out of memory"));
  } catch (const std::exception& error) {
    return Fail(Failure(EDGEC_ERROR_RUN, error.what()));
  }
}

Failure Usage(const std::string& message) { return Failure(EDGEC_ERROR_USAGE, message); }

void CheckModel(const edgec_model* model) {
  if (!model) throw Usage("model is NULL");
}

void Info(const std::vector<TensorSpec>& specs, int32_t index, edgec_tensor_info* info, const char* what) {
  if (!info) throw Usage("info is NULL");
  if (index < 0 || static_cast<size_t>(index) >= specs.size()) {
    throw Usage(std::string(what) + " index " + std::to_string(index) + " is out of range (the model has " +
                std::to_string(specs.size()) + ")");
  }
  const TensorSpec& spec = specs[index];
  *info = edgec_tensor_info{spec.name.c_str(), spec.dtype.c_str(), static_cast<int32_t>(spec.shape.size()),
                            spec.shape.data(), spec.nbytes};
}

/*! \brief `spec` as this run gives it: an output with valid_rows keeps the leading rows its count
 *  says are real (edgec/runtime's cut_to_valid_rows); a count outside 0..rows is refused. */
TensorSpec CutRows(const TensorSpec& spec, const std::map<std::string, ffi::Tensor>& tensors) {
  if (spec.valid_rows.empty()) return spec;
  auto found = tensors.find(spec.valid_rows);
  if (found == tensors.end() || found->second.dtype() != DLDataType{kDLInt, 64, 1} || found->second.numel() != 1 ||
      found->second.device().device_type != kDLCPU) {
    throw Failure(EDGEC_ERROR_RUN, "the model did not produce the int64 row count '" + spec.valid_rows + "'");
  }
  int64_t count = *reinterpret_cast<const int64_t*>(static_cast<const char*>(found->second.data_ptr()) +
                                                    found->second.byte_offset());
  if (count < 0) {
    throw Failure(EDGEC_ERROR_RUN, "output '" + spec.name + "': the compiled NonMaxSuppression could not decide its "
                                   "boxes within its static bound on this input; its rows would not be onnxruntime's");
  }
  if (count > spec.shape[0]) {
    throw Failure(EDGEC_ERROR_RUN, "output '" + spec.name + "': the run counts " + std::to_string(count) +
                                       " rows, more than its " + std::to_string(spec.shape[0]));
  }
  TensorSpec cut = spec;
  cut.shape[0] = count;
  ByteSize(cut.dl, cut.shape, &cut.nbytes);
  return cut;
}

int32_t IndexOf(const std::vector<TensorSpec>& specs, const char* name) {
  for (size_t i = 0; name && i < specs.size(); ++i)
    if (specs[i].name == name) return static_cast<int32_t>(i);
  return -1;
}

}  // namespace

extern "C" {

edgec_status edgec_open_file(const char* path, edgec_model** model) {
  return Guard([&] {
    if (!path || !model) throw Usage("path and model must not be NULL");
    *model = nullptr;
    *model = Open(MapFile(path)).release();
  });
}

edgec_status edgec_open_file_verified(const char* path, const char* public_key_pem, edgec_model** model) {
  return Guard([&] {
    if (!path || !public_key_pem || !model) throw Usage("path, public_key_pem and model must not be NULL");
    *model = nullptr;
    *model = Open(MapFile(path), public_key_pem).release();
  });
}

edgec_status edgec_open_memory(const void* data, size_t size, const char* name, edgec_model** model) {
  return Guard([&] {
    if (!data || !model) throw Usage("data and model must not be NULL");
    *model = nullptr;
    auto bytes = std::make_shared<Bytes>();
    bytes->name = name ? name : "<memory>";
    bytes->data = static_cast<const uint8_t*>(data);
    bytes->size = size;
    *model = Open(bytes).release();
  });
}

void edgec_close(edgec_model* model) { delete model; }

int32_t edgec_num_inputs(const edgec_model* model) { return model ? static_cast<int32_t>(model->inputs.size()) : -1; }
int32_t edgec_num_outputs(const edgec_model* model) {
  return model ? static_cast<int32_t>(model->outputs.size()) : -1;
}

edgec_status edgec_input_info(const edgec_model* model, int32_t index, edgec_tensor_info* info) {
  return Guard([&] {
    CheckModel(model);
    Info(model->inputs, index, info, "input");
  });
}

edgec_status edgec_output_info(const edgec_model* model, int32_t index, edgec_tensor_info* info) {
  return Guard([&] {
    CheckModel(model);
    Info(model->ran.empty() ? model->outputs : model->ran, index, info, "output");
  });
}

int32_t edgec_input_index(const edgec_model* model, const char* name) {
  return model ? IndexOf(model->inputs, name) : -1;
}
int32_t edgec_output_index(const edgec_model* model, const char* name) {
  return model ? IndexOf(model->outputs, name) : -1;
}

edgec_status edgec_set_input(edgec_model* model, int32_t index, const void* data, size_t nbytes) {
  return Guard([&] {
    CheckModel(model);
    edgec_tensor_info info;
    Info(model->inputs, index, &info, "input");
    if (!data) throw Usage("input '" + model->inputs[index].name + "': data is NULL");
    if (nbytes != info.nbytes) {
      throw Usage("input '" + model->inputs[index].name + "' takes " + std::to_string(info.nbytes) + " bytes (" +
                  info.dtype + "), got " + std::to_string(nbytes));
    }
    std::memcpy(model->input_tensors[index].data_ptr(), data, nbytes);
    model->input_set[index] = true;
  });
}

edgec_status edgec_run(edgec_model* model) {
  return Guard([&] {
    CheckModel(model);
    std::map<std::string, ffi::Tensor> tensors;
    for (size_t i = 0; i < model->inputs.size(); ++i) {
      if (!model->input_set[i]) throw Usage("input '" + model->inputs[i].name + "' was not set");
      tensors[model->inputs[i].name] = model->input_tensors[i];
    }
    for (const ShapeInput& p : model->shape_inputs) CheckShapeInput(*model, p);
    for (Stage& stage : model->stages) {
      std::vector<ffi::AnyView> args;
      for (const std::string& name : stage.inputs) {
        auto found = tensors.find(name);
        if (found == tensors.end()) throw Failure(EDGEC_ERROR_RUN, "no tensor '" + name + "' for a partition");
        args.emplace_back(found->second);
      }
      for (const ffi::Tensor& w : stage.weights) args.emplace_back(w);
      ffi::Any result;
      stage.main.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
      std::vector<ffi::Tensor> results;
      if (auto single = result.try_cast<ffi::Tensor>()) {
        results.push_back(*single);
      } else if (auto many = result.try_cast<ffi::Array<ffi::Any>>()) {
        for (const ffi::Any& item : *many) results.push_back(item.cast<ffi::Tensor>());
      }
      if (results.size() != stage.outputs.size()) {
        throw Failure(EDGEC_ERROR_RUN, "a partition returned " + std::to_string(results.size()) +
                                           " tensors, the manifest lists " + std::to_string(stage.outputs.size()));
      }
      for (size_t i = 0; i < results.size(); ++i) tensors[stage.outputs[i]] = results[i];
    }
    std::vector<ffi::Tensor> outputs;
    std::vector<TensorSpec> ran;
    for (const TensorSpec& spec : model->outputs) {
      ran.push_back(CutRows(spec, tensors));
      auto found = tensors.find(spec.name);
      if (found == tensors.end()) throw Failure(EDGEC_ERROR_RUN, "the model did not produce output '" + spec.name + "'");
      const ffi::Tensor& t = found->second;
      if (t.dtype() != spec.dl || t.device().device_type != kDLCPU || !t.IsContiguous() ||
          ffi::GetDataSize(static_cast<size_t>(t.numel()), t.dtype()) != spec.nbytes) {
        throw Failure(EDGEC_ERROR_RUN, "output '" + spec.name + "' is not the " + spec.dtype +
                                           " CPU tensor the manifest describes");
      }
      outputs.push_back(t);
    }
    model->output_tensors = std::move(outputs);
    model->ran = std::move(ran);
  });
}

edgec_status edgec_get_output(const edgec_model* model, int32_t index, void* data, size_t nbytes) {
  return Guard([&] {
    CheckModel(model);
    edgec_tensor_info info;
    Info(model->outputs, index, &info, "output");
    if (model->output_tensors.empty()) throw Usage("no outputs yet: call edgec_run first");
    Info(model->ran, index, &info, "output");
    if (!data) throw Usage("output '" + model->outputs[index].name + "': data is NULL");
    if (nbytes != info.nbytes) {
      throw Usage("output '" + model->outputs[index].name + "' holds " + std::to_string(info.nbytes) + " bytes (" +
                  info.dtype + "), got a buffer of " + std::to_string(nbytes));
    }
    const ffi::Tensor& t = model->output_tensors[index];
    std::memcpy(data, static_cast<const char*>(t.data_ptr()) + t.byte_offset(), nbytes);
  });
}

const char* edgec_last_error(void) { return last_error.c_str(); }

}  // extern "C"
