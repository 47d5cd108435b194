// edgec_run: run an .edgec artifact through edgec's C runtime API (edgec_runtime.h).
//
//   edgec_run [--verify-key PUB.pem] MODEL.edgec IN_DIR OUT_DIR
//
// With --verify-key, the artifact must carry an Ed25519 signature by that key ('edgec
// compile --sign'), checked before anything is loaded (needs the runtime built with OpenSSL).
//
// Reads each input from IN_DIR/<name>.npy, runs the model once and writes each output
// to OUT_DIR/<name>.npy, where <name> is the tensor's name with every character
// outside [A-Za-z0-9_.-] replaced by '_'. Exits 0 on success, 1 on an error (the
// message on stderr names the file or input at fault), 2 on bad usage.
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "edgec_runtime.h"
#include "npy.h"

using edgec::Error;

namespace {

std::string ShapeText(const int64_t* shape, int32_t ndim) {
  std::string text = "[";
  for (int32_t i = 0; i < ndim; ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

void Check(edgec_status status) {
  if (status != EDGEC_OK) throw Error(edgec_last_error());
}

/*! \brief The inputs' (or outputs') infos, refusing two names that map to one file. */
std::vector<edgec_tensor_info> Infos(const edgec_model* model, bool inputs) {
  int32_t count = inputs ? edgec_num_inputs(model) : edgec_num_outputs(model);
  std::vector<edgec_tensor_info> infos(count);
  std::map<std::string, std::string> seen;
  for (int32_t i = 0; i < count; ++i) {
    Check(inputs ? edgec_input_info(model, i, &infos[i]) : edgec_output_info(model, i, &infos[i]));
    auto [it, fresh] = seen.emplace(edgec::NpyFileName(infos[i].name), infos[i].name);
    if (!fresh) throw Error("tensors '" + it->second + "' and '" + infos[i].name + "' both map to file " + it->first);
  }
  return infos;
}

int Run(edgec_model* model, const std::string& in_dir, const std::string& out_dir) {
  std::vector<edgec_tensor_info> inputs = Infos(model, true), outputs = Infos(model, false);
  std::string all_names;
  for (const edgec_tensor_info& info : inputs) all_names += (all_names.empty() ? "" : ", ") + std::string(info.name);
  for (int32_t i = 0; i < static_cast<int32_t>(inputs.size()); ++i) {
    const edgec_tensor_info& info = inputs[i];
    std::string path = in_dir + "/" + edgec::NpyFileName(info.name);
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      throw Error("missing input '" + std::string(info.name) + "': no file " + path + "; the model takes " + all_names);
    }
    edgec::NpyArray array = edgec::ReadNpy(path);
    if (array.dtype != info.dtype) {
      throw Error("input '" + std::string(info.name) + "' must be " + info.dtype + ", got " + array.dtype + " (" +
                  path + ")");
    }
    if (array.shape != std::vector<int64_t>(info.shape, info.shape + info.ndim)) {
      throw Error("input '" + std::string(info.name) + "' must have shape " + ShapeText(info.shape, info.ndim) +
                  ", got " + ShapeText(array.shape.data(), static_cast<int32_t>(array.shape.size())) + " (" + path +
                  ")");
    }
    Check(edgec_set_input(model, i, array.data.data(), array.data.size()));
  }
  Check(edgec_run(model));
  mkdir(out_dir.c_str(), 0777);  // may exist already; a failure shows when writing
  for (int32_t i = 0; i < static_cast<int32_t>(outputs.size()); ++i) {
    const edgec_tensor_info& info = outputs[i];
    std::vector<char> data(info.nbytes);
    Check(edgec_get_output(model, i, data.data(), data.size()));
    edgec::WriteNpy(out_dir + "/" + edgec::NpyFileName(info.name), info.dtype,
                    std::vector<int64_t>(info.shape, info.shape + info.ndim), data.data(), data.size());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* program = argv[0];
  std::string verify_key;
  if (argc == 6 && std::string(argv[1]) == "--verify-key") {
    verify_key = argv[2];
    argv += 2;
    argc -= 2;
  }
  if (argc != 4) {
    std::cerr << "usage: " << program << " [--verify-key PUB.pem] MODEL.edgec IN_DIR OUT_DIR\n"
              << "  reads IN_DIR/<input>.npy, writes OUT_DIR/<output>.npy; in file names every character\n"
              << "  outside [A-Za-z0-9_.-] of a tensor's name is replaced by '_'\n";
    return 2;
  }
  edgec_model* model = nullptr;
  edgec_status opened = verify_key.empty() ? edgec_open_file(argv[1], &model)
                                            : edgec_open_file_verified(argv[1], verify_key.c_str(), &model);
  if (opened != EDGEC_OK) {
    std::cerr << "edgec_run: error: " << edgec_last_error() << "\n";
    return 1;
  }
  int code = 1;
  try {
    code = Run(model, argv[2], argv[3]);
  } catch (const std::exception& error) {
    std::cerr << "edgec_run: error: " << error.what() << "\n";
  }
  edgec_close(model);
  return code;
}
