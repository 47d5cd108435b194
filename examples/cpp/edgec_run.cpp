// edgec_run: run an .edgec artifact from C++ with the TVM runtime that ships in the
// apache-tvm wheel.
//
//   edgec_run [--verify-key PUB.pem] MODEL.edgec IN_DIR OUT_DIR
//
// Reads each input from IN_DIR/<name>.npy, runs the model once and writes each output
// to OUT_DIR/<name>.npy, where <name> is the tensor's name with every character
// outside [A-Za-z0-9_.-] replaced by '_'. Exits 0 on success, 1 on an error (the
// message on stderr names the file or input at fault), 2 on bad usage.
//
// What it does, in the order edgec's Python runtime (edgec/runtime.py) does it:
//  1. maps the artifact read-only and finds its members (edgec_artifact.h);
//  2. parses manifest.json and refuses an artifact this machine cannot run; built with
//     OpenSSL, checks the manifest digest, model.so's and weights.bin's sha256 and,
//     with --verify-key, the Ed25519 signature (manifest.sig) of the digest;
//  3. writes model.so to a private temp file, loads it, and deletes the file;
//  4. creates a Relax VM on the CPU from the library;
//  5. wraps every weight as a tensor viewing the map (no copy);
//  6. calls main(inputs..., weights...) and writes the outputs.
#include <dlfcn.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/utsname.h>
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

#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "edgec_artifact.h"

#ifdef EDGEC_WITH_OPENSSL
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#endif

namespace ffi = tvm::ffi;
using edgec::Error;

namespace {

constexpr const char* kFormat = "edgec-artifact";
constexpr int64_t kFormatVersion = 1;
constexpr size_t kAlignment = 64;

// ---------------------------------------------------------------------------------
// Manifest access: the parsed JSON is Map<Any, Any> / Array<Any> / String / int64.
// ---------------------------------------------------------------------------------

struct Manifest {
  std::string path;  // the artifact, for messages
  ffi::json::Object root;

  ffi::Any Get(const ffi::json::Object& object, const char* key, const std::string& where) const {
    auto it = object.find(ffi::String(key));
    if (it == object.end()) throw Error(path + ": manifest has no '" + where + key + "'");
    return (*it).second;
  }
  ffi::json::Object Object(const ffi::Any& value, const std::string& what) const {
    if (auto object = value.try_cast<ffi::json::Object>()) return *object;
    throw Error(path + ": manifest '" + what + "' is not an object");
  }
  ffi::json::Array List(const ffi::Any& value, const std::string& what) const {
    if (auto array = value.try_cast<ffi::json::Array>()) return *array;
    throw Error(path + ": manifest '" + what + "' is not a list");
  }
  std::string Str(const ffi::Any& value, const std::string& what) const {
    if (auto text = value.try_cast<ffi::String>()) return std::string(*text);
    throw Error(path + ": manifest '" + what + "' is not a string");
  }
  int64_t Int(const ffi::Any& value, const std::string& what) const {
    if (value.type_index() == ffi::TypeIndex::kTVMFFIInt) return value.cast<int64_t>();
    throw Error(path + ": manifest '" + what + "' is not an integer");
  }
  std::vector<int64_t> Shape(const ffi::Any& value, const std::string& what) const {
    std::vector<int64_t> shape;
    for (const ffi::Any& dim : List(value, what)) shape.push_back(Int(dim, what));
    return shape;
  }
};

/*! \brief One tensor of the signature or the weight index. */
struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // weights only
  int64_t nbytes = 0;  // weights only
};

std::vector<TensorSpec> Specs(const Manifest& manifest, const ffi::Any& list, const std::string& what,
                              bool weights) {
  std::vector<TensorSpec> specs;
  for (const ffi::Any& item : manifest.List(list, what)) {
    ffi::json::Object entry = manifest.Object(item, what + "[]");
    TensorSpec spec;
    spec.name = manifest.Str(manifest.Get(entry, "name", what + "[]."), what + "[].name");
    spec.dtype = manifest.Str(manifest.Get(entry, "dtype", what + "[]."), what + "[].dtype");
    spec.shape = manifest.Shape(manifest.Get(entry, "shape", what + "[]."), what + "[].shape");
    if (weights) {
      spec.offset = manifest.Int(manifest.Get(entry, "offset", what + "[]."), what + "[].offset");
      spec.nbytes = manifest.Int(manifest.Get(entry, "nbytes", what + "[]."), what + "[].nbytes");
    }
    specs.push_back(spec);
  }
  return specs;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

size_t ByteSize(const std::string& dtype, const std::vector<int64_t>& shape) {
  size_t count = 1;
  for (int64_t d : shape) count *= static_cast<size_t>(d);
  return ffi::GetDataSize(count, ffi::StringToDLDataType(ffi::String(dtype)));
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

void CheckMachine(const Manifest& manifest) {
  ffi::json::Object target = manifest.Object(manifest.Get(manifest.root, "target", ""), "target");
  std::string name = manifest.Str(manifest.Get(target, "name", "target."), "target.name");
  std::string device = manifest.Str(manifest.Get(target, "device", "target."), "target.device");
  if (device != "cpu") {
    throw Error(manifest.path + ": built for device '" + device + "' (target " + name +
                "); edgec_run runs CPU artifacts only");
  }
  std::string triple = manifest.Str(manifest.Get(target, "triple", "target."), "target.triple");
  struct utsname host;
  uname(&host);
  if (triple.substr(0, triple.find('-')) != NormalizeMachine(host.machine)) {
    throw Error(manifest.path + ": built for " + triple + " (target " + name + "), but this machine is " +
                host.machine + "; run it on the device");
  }
#if defined(__aarch64__) && defined(__linux__)
  // Code using a missing extension dies of SIGILL, not an error: refuse it up front.
  std::set<std::string> available = CpuFeatures();
  std::string missing;
  auto it = target.find(ffi::String("features"));
  if (it != target.end()) {
    for (const ffi::Any& feature : manifest.List((*it).second, "target.features")) {
      std::string f = manifest.Str(feature, "target.features[]");
      if (!available.count(f)) missing += (missing.empty() ? "" : ", ") + f;
    }
  }
  if (!missing.empty()) {
    throw Error(manifest.path + ": this machine lacks CPU feature(s) " + missing + " required by target " + name);
  }
#endif
}

/*! \brief TVM's pool uses one thread on a 2-core machine unless told: use the physical cores,
 *  as edgec's Python runtime does, unless TVM_NUM_THREADS is already set. */
void SetThreads() {
  if (std::getenv("TVM_NUM_THREADS")) return;
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0) return;
  std::set<std::string> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &cpus)) continue;
    std::string topology = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package(topology + "physical_package_id"), core(topology + "core_id");
    std::string p, c;
    if (package >> p && core >> c) {
      cores.insert(p + ":" + c);
    } else {
      cores.insert("?:" + std::to_string(cpu));
    }
  }
  setenv("TVM_NUM_THREADS", std::to_string(cores.empty() ? 1 : cores.size()).c_str(), 0);
}

// ---------------------------------------------------------------------------------
// Tensors.
// ---------------------------------------------------------------------------------

/*! \brief Owns 64-byte-aligned host memory for a tensor. */
struct AlignedAlloc {
  void AllocData(DLTensor* tensor) {
    size_t size = ffi::GetDataSize(*tensor);
    tensor->data = std::aligned_alloc(kAlignment, (size + kAlignment - 1) / kAlignment * kAlignment + kAlignment);
    if (!tensor->data) throw Error("out of memory");
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

/*! \brief Views memory it does not own: a weight inside the artifact's map, kept alive by `keep`. */
struct ViewAlloc {
  void* data;
  std::shared_ptr<edgec::MappedFile> keep;
  void AllocData(DLTensor* tensor) { tensor->data = data; }
  void FreeData(DLTensor*) {}
};

ffi::Shape ToShape(const std::vector<int64_t>& shape) { return ffi::Shape(shape.begin(), shape.end()); }

constexpr DLDevice kCPU{kDLCPU, 0};

/*! \brief Each weight as a tensor over the mapped artifact: no copy. */
std::vector<ffi::Tensor> MapWeights(const std::shared_ptr<edgec::MappedFile>& file, const edgec::Member& blob,
                                    const std::vector<TensorSpec>& weights) {
  std::vector<ffi::Tensor> tensors;
  for (const TensorSpec& w : weights) {
    size_t expected = ByteSize(w.dtype, w.shape);
    if (w.offset < 0 || w.nbytes < 0 || static_cast<size_t>(w.nbytes) != expected ||
        static_cast<size_t>(w.offset) + expected > blob.size) {
      throw Error(file->path() + ": weight '" + w.name + "' lies outside weights.bin or has the wrong size");
    }
    void* data = const_cast<uint8_t*>(file->data() + blob.offset + w.offset);
    if (reinterpret_cast<uintptr_t>(data) % kAlignment != 0) {
      throw Error(file->path() + ": weight '" + w.name + "' is not 64-byte aligned in the file");
    }
    tensors.push_back(ffi::Tensor::FromNDAlloc(ViewAlloc{data, file}, ToShape(w.shape),
                                               ffi::StringToDLDataType(ffi::String(w.dtype)), kCPU));
  }
  return tensors;
}

ffi::Tensor ReadInput(const TensorSpec& spec, const std::string& in_dir, const std::string& all_names) {
  std::string path = in_dir + "/" + edgec::NpyFileName(spec.name);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    throw Error("missing input '" + spec.name + "': no file " + path + "; the model takes " + all_names);
  }
  edgec::NpyArray array = edgec::ReadNpy(path);
  if (array.dtype != spec.dtype) {
    throw Error("input '" + spec.name + "' must be " + spec.dtype + ", got " + array.dtype + " (" + path + ")");
  }
  if (array.shape != spec.shape) {
    throw Error("input '" + spec.name + "' must have shape " + ShapeText(spec.shape) + ", got " +
                ShapeText(array.shape) + " (" + path + ")");
  }
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ToShape(spec.shape),
                                                ffi::StringToDLDataType(ffi::String(spec.dtype)), kCPU);
  std::memcpy(tensor.data_ptr(), array.data.data(), array.data.size());
  return tensor;
}

void WriteOutput(const TensorSpec& spec, const ffi::Tensor& tensor, const std::string& out_dir) {
  std::string dtype = std::string(ffi::DLDataTypeToString(tensor.dtype()));
  if (dtype != spec.dtype) throw Error("output '" + spec.name + "' is " + dtype + ", the manifest says " + spec.dtype);
  if (tensor.device().device_type != kDLCPU || !tensor.IsContiguous()) {
    throw Error("output '" + spec.name + "' is not a contiguous CPU tensor");
  }
  std::vector<int64_t> shape(tensor.shape().begin(), tensor.shape().end());
  const char* data = static_cast<const char*>(tensor.data_ptr()) + tensor.byte_offset();
  edgec::WriteNpy(out_dir + "/" + edgec::NpyFileName(spec.name), dtype, shape, data,
                  ffi::GetDataSize(static_cast<size_t>(tensor.numel()), tensor.dtype()));
}

#ifdef EDGEC_WITH_OPENSSL
using Digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

Digest Sha256(const edgec::MappedFile& file, const edgec::Member& member) {
  Digest digest;
  SHA256(file.data() + member.offset, member.size, digest.data());
  return digest;
}

std::string Hex(const Digest& digest) {
  static const char* kDigits = "0123456789abcdef";
  std::string hex;
  for (unsigned char byte : digest) hex += {kDigits[byte >> 4], kDigits[byte & 15]};
  return hex;
}

/*! \brief The manifest against manifest.sha256, and the members it records against their sha256,
 *  as edgec's Python runtime checks them; returns the manifest digest. */
Digest CheckIntegrity(const edgec::MappedFile& file, const std::map<std::string, edgec::Member>& members,
                      const Manifest& manifest) {
  const std::string& path = file.path();
  auto digest_member = members.find("manifest.sha256");
  if (digest_member == members.end()) throw Error(path + ": member 'manifest.sha256' is missing; recompile the model");
  Digest digest = Sha256(file, members.at("manifest.json"));
  std::string recorded(reinterpret_cast<const char*>(file.data() + digest_member->second.offset),
                       digest_member->second.size);
  while (!recorded.empty() && std::isspace(static_cast<unsigned char>(recorded.back()))) recorded.pop_back();
  if (recorded != Hex(digest)) throw Error(path + ": member 'manifest.json' is corrupt (its sha256 does not match 'manifest.sha256')");
  ffi::json::Object listed = manifest.Object(manifest.Get(manifest.root, "members", ""), "members");
  for (const char* name : {"model.so", "weights.bin"}) {
    ffi::json::Object entry = manifest.Object(manifest.Get(listed, name, "members."), std::string("members.") + name);
    const edgec::Member& member = members.at(name);
    if (manifest.Int(manifest.Get(entry, "size", "members.x."), "members.size") != static_cast<int64_t>(member.size) ||
        manifest.Str(manifest.Get(entry, "sha256", "members.x."), "members.sha256") != Hex(Sha256(file, member))) {
      throw Error(path + ": member '" + name + "' is corrupt (sha256 mismatch with the manifest)");
    }
  }
  return digest;
}

/*! \brief Refuse unless manifest.sig is an Ed25519 signature of the digest by the key in key_path. */
void VerifySignature(const edgec::MappedFile& file, const std::map<std::string, edgec::Member>& members,
                     const Digest& digest, const std::string& key_path) {
  const std::string& path = file.path();
  auto sig = members.find("manifest.sig");
  if (sig == members.end()) throw Error(path + ": member 'manifest.sig' is missing: the artifact is not signed");
  if (sig->second.size != 64) throw Error(path + ": member 'manifest.sig' is not an Ed25519 signature (64 bytes)");
  FILE* key_file = std::fopen(key_path.c_str(), "rb");
  if (!key_file) throw Error("--verify-key " + key_path + ": " + std::strerror(errno));
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(PEM_read_PUBKEY(key_file, nullptr, nullptr, nullptr),
                                                          EVP_PKEY_free);
  std::fclose(key_file);
  if (!key || EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) {
    throw Error("--verify-key " + key_path + ": not an Ed25519 public key in PEM");
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), file.data() + sig->second.offset, sig->second.size, digest.data(),
                             digest.size()) == 1;
  if (!ok) throw Error(path + ": member 'manifest.sig' does not verify with " + key_path);
}
#endif

/*! \brief dlopen the library member: written to a private temp dir, loaded, then deleted. */
ffi::Module LoadLibrary(const edgec::MappedFile& file, const edgec::Member& member) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/edgec-run-XXXXXX";
  if (!mkdtemp(dir.data())) throw Error("cannot make a temp dir under " + dir + ": " + std::strerror(errno));
  std::string path = dir + "/model.so";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(file.data() + member.offset), static_cast<std::streamsize>(member.size));
    if (!out) {
      std::remove(path.c_str());
      rmdir(dir.c_str());
      throw Error("cannot write " + path);
    }
  }
  try {
    ffi::Module library = ffi::Module::LoadFromFile(path);
    std::remove(path.c_str());
    rmdir(dir.c_str());
    return library;
  } catch (const ffi::Error& error) {
    std::remove(path.c_str());
    rmdir(dir.c_str());
    throw Error(file.path() + ": cannot load the compiled library: " + error.message());
  }
}

int Run(const std::string& artifact_path, const std::string& in_dir, const std::string& out_dir,
        const std::string& verify_key) {
  // 1. The container.
  auto file = std::make_shared<edgec::MappedFile>(artifact_path);
  std::map<std::string, edgec::Member> members = edgec::ReadTar(*file);
  auto manifest_member = members.find("manifest.json");
  if (manifest_member == members.end()) throw Error(artifact_path + ": not an edgec artifact (no edgec manifest)");

  // 2. The manifest.
  Manifest manifest{artifact_path, {}};
  ffi::String json_error;
  ffi::json::Value parsed = ffi::json::Parse(
      ffi::String(reinterpret_cast<const char*>(file->data() + manifest_member->second.offset),
                  manifest_member->second.size),
      &json_error);
  auto root = parsed.try_cast<ffi::json::Object>();
  if (!json_error.empty() || !root) {
    throw Error(artifact_path + ": not an edgec artifact (manifest.json: " + std::string(json_error) + ")");
  }
  manifest.root = *root;
  auto format = manifest.root.find(ffi::String("format"));
  if (format == manifest.root.end() || (*format).second.try_cast<ffi::String>() != ffi::String(kFormat)) {
    throw Error(artifact_path + ": not an edgec artifact (no edgec manifest)");
  }
  int64_t version = manifest.Int(manifest.Get(manifest.root, "format_version", ""), "format_version");
  if (version != kFormatVersion) {
    throw Error(artifact_path + ": artifact format version " + std::to_string(version) +
                " is not supported (edgec_run reads version " + std::to_string(kFormatVersion) +
                "); recompile the model");
  }
  for (const char* name : {"model.so", "weights.bin"}) {
    if (!members.count(name)) throw Error(artifact_path + ": artifact is missing member " + name);
  }
#ifdef EDGEC_WITH_OPENSSL
  Digest digest = CheckIntegrity(*file, members, manifest);
  if (!verify_key.empty()) VerifySignature(*file, members, digest, verify_key);
#else
  if (!verify_key.empty()) throw Error("--verify-key: this edgec_run was built without OpenSSL");
#endif
  CheckMachine(manifest);
  ffi::json::Object signature = manifest.Object(manifest.Get(manifest.root, "signature", ""), "signature");
  std::vector<TensorSpec> inputs = Specs(manifest, manifest.Get(signature, "inputs", "signature."), "signature.inputs", false);
  std::vector<TensorSpec> outputs = Specs(manifest, manifest.Get(signature, "outputs", "signature."), "signature.outputs", false);
  std::vector<TensorSpec> weights = Specs(manifest, manifest.Get(manifest.root, "weights", ""), "weights", true);

  // Two names that map to one file name would overwrite each other: refuse.
  for (const auto* specs : {&inputs, &outputs}) {
    std::map<std::string, std::string> seen;
    for (const TensorSpec& spec : *specs) {
      auto [it, fresh] = seen.emplace(edgec::NpyFileName(spec.name), spec.name);
      if (!fresh) throw Error("tensors '" + it->second + "' and '" + spec.name + "' both map to file " + it->first);
    }
  }

  // The inputs, checked before anything is loaded.
  std::string all_names;
  for (const TensorSpec& spec : inputs) all_names += (all_names.empty() ? "" : ", ") + spec.name;
  std::vector<ffi::Tensor> input_tensors;
  for (const TensorSpec& spec : inputs) input_tensors.push_back(ReadInput(spec, in_dir, all_names));

  // 3-4. The library and a Relax VM on the CPU over it.
  SetThreads();
  ffi::Module library = LoadLibrary(*file, members.at("model.so"));
  ffi::Optional<ffi::Function> load_executable = library->GetFunction("vm_load_executable");
  if (!load_executable) throw Error(artifact_path + ": model.so is not a Relax VM executable");
  ffi::Module vm = (*load_executable)().cast<ffi::Module>();
  constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  ffi::Function main_fn = vm->GetFunction("main").value();

  // 5. The weights, straight from the map.
  std::vector<ffi::Tensor> weight_tensors = MapWeights(file, members.at("weights.bin"), weights);

  // 6. main(inputs..., weights...).
  std::vector<ffi::AnyView> args;
  for (const ffi::Tensor& t : input_tensors) args.emplace_back(t);
  for (const ffi::Tensor& t : weight_tensors) args.emplace_back(t);
  ffi::Any result;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);

  std::vector<ffi::Tensor> results;
  if (auto single = result.try_cast<ffi::Tensor>()) {
    results.push_back(*single);
  } else if (auto many = result.try_cast<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *many) results.push_back(item.cast<ffi::Tensor>());
  } else {
    throw Error("main returned " + std::string(result.GetTypeKey()) + ", expected tensors");
  }
  if (results.size() != outputs.size()) {
    throw Error("main returned " + std::to_string(results.size()) + " outputs, the manifest lists " +
                std::to_string(outputs.size()));
  }
  mkdir(out_dir.c_str(), 0777);  // may exist already; a failure shows when writing
  for (size_t i = 0; i < outputs.size(); ++i) WriteOutput(outputs[i], results[i], out_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string verify_key;
  if (argc == 6 && std::string(argv[1]) == "--verify-key") {
    verify_key = argv[2];
    argv += 2;
    argc -= 2;
  }
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " [--verify-key PUB.pem] MODEL.edgec IN_DIR OUT_DIR\n"
              << "  reads IN_DIR/<input>.npy, writes OUT_DIR/<output>.npy; in file names every character\n"
              << "  outside [A-Za-z0-9_.-] of a tensor's name is replaced by '_'\n";
    return 2;
  }
  try {
    return Run(argv[1], argv[2], argv[3], verify_key);
  } catch (const ffi::Error& error) {
    std::cerr << "edgec_run: error: " << error.kind() << ": " << error.message() << "\n";
  } catch (const std::exception& error) {
    std::cerr << "edgec_run: error: " << error.what() << "\n";
  }
  return 1;
}
