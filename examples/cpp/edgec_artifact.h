// edgec_artifact.h: read an .edgec artifact and .npy files from C++, no dependencies
// beyond the C++17 standard library and POSIX.
//
// An .edgec artifact is an uncompressed POSIX ustar tar holding, in order,
// manifest.json, model.so and weights.bin. Tar puts every member's data at a
// 512-byte boundary, and weights.bin holds each weight at a 64-byte-aligned offset,
// so mapping the whole file gives every weight at a 64-byte-aligned address (the
// alignment TVM's generated code assumes) without a copy.
//
// The manifest is JSON; this header hands back its text and leaves parsing to the
// caller (edgec_run.cpp uses tvm::ffi::json, which ships with the TVM runtime).
#ifndef EDGEC_ARTIFACT_H_
#define EDGEC_ARTIFACT_H_

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgec {

/*! \brief Every failure this header reports: the message names the file and the problem. */
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/*! \brief A read-only memory map of a whole file; unmapped when destroyed. */
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(path + ": not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* data = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
      if (data == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        throw Error(path + ": cannot map: " + std::strerror(err));
      }
      data_ = static_cast<const uint8_t*>(data);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

/*! \brief Where one tar member's bytes lie in the file. */
struct Member {
  size_t offset;
  size_t size;
};

namespace detail {

inline uint64_t ParseOctal(const uint8_t* field, size_t width, bool* ok) {
  uint64_t value = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  bool digits = false;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i, digits = true) {
    value = value * 8 + (field[i] - '0');
  }
  for (; i < width; ++i) {  // the rest may only be NULs or spaces
    if (field[i] != '\0' && field[i] != ' ') *ok = false;
  }
  if (!digits) *ok = false;
  return value;
}

inline std::string CString(const uint8_t* field, size_t width) {
  size_t n = 0;
  while (n < width && field[n] != '\0') ++n;
  return std::string(reinterpret_cast<const char*>(field), n);
}

}  // namespace detail

/*!
 * \brief The regular-file members of a ustar archive, by name.
 *
 * Parses 512-byte headers (name, prefix, size, type, checksum) until the zero block
 * that ends the archive. Throws Error for anything that is not a well-formed ustar.
 */
inline std::map<std::string, Member> ReadTar(const MappedFile& file) {
  constexpr size_t kBlock = 512;
  std::map<std::string, Member> members;
  const uint8_t* base = file.data();
  size_t pos = 0;
  auto bad = [&](const std::string& why) {
    return Error(file.path() + ": not an edgec artifact (not a tar file: " + why + ")");
  };
  while (true) {
    if (pos + kBlock > file.size()) throw bad("truncated header at byte " + std::to_string(pos));
    const uint8_t* header = base + pos;
    bool zero = true;
    for (size_t i = 0; i < kBlock && zero; ++i) zero = header[i] == 0;
    if (zero) break;  // end of archive
    if (std::memcmp(header + 257, "ustar", 5) != 0) throw bad("no ustar magic at byte " + std::to_string(pos));
    bool ok = true;
    uint64_t recorded = detail::ParseOctal(header + 148, 8, &ok);
    uint64_t sum = 0;
    for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : header[i];
    if (!ok || recorded != sum) throw bad("bad header checksum at byte " + std::to_string(pos));
    uint64_t size = detail::ParseOctal(header + 124, 12, &ok);
    if (!ok) throw bad("bad member size at byte " + std::to_string(pos));
    std::string name = detail::CString(header, 100);
    std::string prefix = detail::CString(header + 345, 155);
    if (!prefix.empty()) name = prefix + "/" + name;
    size_t data = pos + kBlock;
    if (size > file.size() || data + size > file.size()) throw bad("member '" + name + "' is truncated");
    char type = static_cast<char>(header[156]);
    if (type == '0' || type == '\0') members[name] = Member{data, static_cast<size_t>(size)};
    pos = data + (size + kBlock - 1) / kBlock * kBlock;
  }
  return members;
}

// ---------------------------------------------------------------------------------
// .npy files (format versions 1.0, 2.0 and 3.0), little-endian, C order.
// ---------------------------------------------------------------------------------

/*! \brief numpy's array-interface descr for a dtype name ("float32" -> "<f4"). */
inline std::string NpyDescr(const std::string& dtype) {
  static const std::map<std::string, std::string> table = {
      {"float16", "<f2"}, {"float32", "<f4"}, {"float64", "<f8"}, {"int8", "|i1"},
      {"int16", "<i2"},   {"int32", "<i4"},   {"int64", "<i8"},   {"uint8", "|u1"},
      {"uint16", "<u2"},  {"uint32", "<u4"},  {"uint64", "<u8"},  {"bool", "|b1"},
  };
  auto it = table.find(dtype);
  if (it == table.end()) throw Error("dtype " + dtype + " has no .npy support here");
  return it->second;
}

/*! \brief The dtype name for a descr ("<f4" -> "float32"); big-endian is refused. */
inline std::string NpyDtype(std::string descr) {
  if (descr.size() == 3 && (descr[0] == '=' || (descr[0] == '<' && descr[2] == '1'))) {
    descr[0] = descr[2] == '1' ? '|' : '<';  // '=' is native (little-endian here); '<u1' == '|u1'
  }
  for (const char* name : {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                           "uint16", "uint32", "uint64", "bool"}) {
    if (NpyDescr(name) == descr) return name;
  }
  return "";  // unsupported: the caller names the file
}

/*! \brief A .npy file read whole: its dtype name, shape and raw data. */
struct NpyArray {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string data;
};

namespace detail {

/*! \brief The text after "'key':" in a .npy header dict, or npos. */
inline size_t NpyField(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return at;
  at = header.find(':', at);
  if (at == std::string::npos) return at;
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  return at;
}

}  // namespace detail

inline NpyArray ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto bad = [&](const std::string& why) { return Error(path + ": not a valid .npy file (" + why + ")"); };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("no \\x93NUMPY magic");
  int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("truncated header");
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(bytes[8 + i]);
    start = 12;
  } else {
    throw bad("format version " + std::to_string(major) + " is not supported");
  }
  if (start + header_len > bytes.size()) throw bad("truncated header");
  std::string header = bytes.substr(start, header_len);

  NpyArray array;
  size_t at = detail::NpyField(header, "descr");
  size_t end = at == std::string::npos || at >= header.size() ? std::string::npos : header.find(header[at], at + 1);
  if (end == std::string::npos) throw bad("no 'descr'");
  std::string descr = header.substr(at + 1, end - at - 1);
  array.dtype = NpyDtype(descr);
  if (array.dtype.empty()) {
    throw Error(path + ": dtype '" + descr +
                "' is not supported (little-endian bool, int8-64, uint8-64, float16/32/64 are)");
  }
  at = detail::NpyField(header, "fortran_order");
  if (at == std::string::npos) throw bad("no 'fortran_order'");
  if (header.compare(at, 4, "True") == 0) throw Error(path + ": Fortran-order arrays are not supported; save it C-ordered");
  at = detail::NpyField(header, "shape");
  end = at == std::string::npos ? at : header.find(')', at);
  if (at == std::string::npos || header[at] != '(' || end == std::string::npos) throw bad("no 'shape'");
  std::stringstream dims(header.substr(at + 1, end - at - 1));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    size_t first = dim.find_first_not_of(" \t\n"), last = dim.find_last_not_of(" \tL\n");
    if (first == std::string::npos) continue;  // "(5,)" leaves an empty piece
    try {
      size_t used = 0;
      long long value = std::stoll(dim.substr(first, last - first + 1), &used);
      if (used != last - first + 1 || value < 0) throw std::invalid_argument(dim);
      array.shape.push_back(value);
    } catch (const std::exception&) {
      throw bad("bad shape '" + header.substr(at, end - at + 1) + "'");
    }
  }
  size_t itemsize = static_cast<size_t>(descr[2] - '0');
  size_t count = 1;
  for (int64_t d : array.shape) count *= static_cast<size_t>(d);
  size_t nbytes = count * itemsize;
  size_t data_at = start + header_len;
  if (bytes.size() - data_at < nbytes) {
    throw bad("holds " + std::to_string(bytes.size() - data_at) + " data bytes, the header says " +
              std::to_string(nbytes));
  }
  array.data = bytes.substr(data_at, nbytes);
  return array;
}

/*! \brief Write a C-order .npy (format 1.0, the header padded to 64 bytes as numpy does). */
inline void WriteNpy(const std::string& path, const std::string& dtype, const std::vector<int64_t>& shape,
                     const void* data, size_t nbytes) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string header = "{'descr': '" + NpyDescr(dtype) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) throw Error(path + ": .npy header too long");
  std::string preamble = std::string("\x93NUMPY\x01\x00", 8);
  preamble += static_cast<char>(header.size() & 0xff);
  preamble += static_cast<char>(header.size() >> 8);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << preamble << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  out.close();
  if (!out) throw Error(path + ": cannot write: " + std::strerror(errno));
}

/*!
 * \brief The file name for a tensor name: every character outside [A-Za-z0-9_.-] becomes '_'.
 *
 * ONNX names may hold '/', ':' and the like ("encoder/input:0" -> "encoder_input_0.npy").
 */
inline std::string NpyFileName(const std::string& tensor_name) {
  std::string out = tensor_name;
  for (char& c : out) {
    bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                c == '.' || c == '-';
    if (!keep) c = '_';
  }
  return out + ".npy";
}

}  // namespace edgec

#endif  // EDGEC_ARTIFACT_H_
