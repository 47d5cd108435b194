// npy.h: read and write .npy files from C++17, no dependencies (format versions 1.0, 2.0
// and 3.0, little-endian, C order), for edgec_run.
#ifndef EDGEC_NPY_H_
#define EDGEC_NPY_H_

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

#endif  // EDGEC_NPY_H_
