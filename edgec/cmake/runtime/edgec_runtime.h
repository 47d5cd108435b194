/* edgec_runtime.h: run an .edgec artifact from C, over TVM's C++ runtime library.
 *
 * A board's firmware or application opens an artifact (from a file or from memory),
 * asks for its inputs and outputs, sets the inputs, runs it and reads the outputs:
 *
 *     edgec_model* model;
 *     if (edgec_open_file("digits.edgec", &model) != EDGEC_OK) {
 *       fprintf(stderr, "%s\n", edgec_last_error());
 *       return 1;
 *     }
 *     edgec_set_input(model, 0, image, sizeof image);
 *     edgec_run(model);
 *     edgec_get_output(model, 0, logits, sizeof logits);
 *     edgec_close(model);
 *
 * Every artifact format is read: one library (format 1) and one library per partition
 * (format 2), the partitions run in order on the CPU. Opening trusts nothing in the
 * bytes, and applies the checks of edgec's Python runtime (edgec/artifact.py): member
 * names, regular tar entries, exactly the members the manifest lists at the sizes it
 * records, the manifest against manifest.sha256, every member against its sha256, the
 * weight index inside weights.bin. Signatures (manifest.sig) are not checked here.
 *
 * Every function but edgec_close returns EDGEC_OK or an error code; the message, one
 * line naming the artifact and what is wrong, is edgec_last_error() on the same thread.
 */
#ifndef EDGEC_RUNTIME_H_
#define EDGEC_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  EDGEC_OK = 0,
  EDGEC_ERROR_ARTIFACT = 1, /* not an artifact, corrupt, or not runnable on this machine */
  EDGEC_ERROR_USAGE = 2,    /* a bad argument: index out of range, wrong byte count, NULL */
  EDGEC_ERROR_RUN = 3       /* loading the library or running the model failed */
} edgec_status;

typedef struct edgec_model edgec_model;

/* One input or output. The strings and shape live as long as the model. */
typedef struct {
  const char* name;
  const char* dtype; /* numpy's names: "float32", "int8", "int64", ... */
  int32_t ndim;
  const int64_t* shape;
  size_t nbytes; /* what edgec_set_input takes and edgec_get_output gives */
} edgec_tensor_info;

/* Open the artifact at `path`; it is mapped read-only, not copied. */
edgec_status edgec_open_file(const char* path, edgec_model** model);

/* Open as edgec_open_file, after checking that member manifest.sig is an Ed25519 signature of
 * the manifest's digest by the public key in the PEM file `public_key_pem` ('edgec keygen'
 * writes KEY.pub; 'edgec compile --sign KEY' signs), before anything is loaded. A runtime
 * built without OpenSSL refuses with EDGEC_ERROR_USAGE. */
edgec_status edgec_open_file_verified(const char* path, const char* public_key_pem, edgec_model** model);

/* Open an artifact held in memory (e.g. in flash). The bytes must stay valid and
 * unchanged until edgec_close; weights are used in place when 64-byte aligned there,
 * else copied once. `name` appears in error messages. */
edgec_status edgec_open_memory(const void* data, size_t size, const char* name, edgec_model** model);

/* Release everything the model holds; NULL is allowed. */
void edgec_close(edgec_model* model);

int32_t edgec_num_inputs(const edgec_model* model);
int32_t edgec_num_outputs(const edgec_model* model);
edgec_status edgec_input_info(const edgec_model* model, int32_t index, edgec_tensor_info* info);
edgec_status edgec_output_info(const edgec_model* model, int32_t index, edgec_tensor_info* info);
/* The index of the input or output called `name`, or -1. */
int32_t edgec_input_index(const edgec_model* model, const char* name);
int32_t edgec_output_index(const edgec_model* model, const char* name);

/* Copy `nbytes` (exactly the input's size, C order, its dtype) into input `index`. */
edgec_status edgec_set_input(edgec_model* model, int32_t index, const void* data, size_t nbytes);

/* Run once on the inputs set (all must have been set). */
edgec_status edgec_run(edgec_model* model);

/* Copy output `index` of the last run into `data` (`nbytes` exactly the output's size). An
 * output whose row count the data decides (NonMaxSuppression's, compiled at its upper bound)
 * gives the rows that run found, as onnxruntime would: edgec_output_info tells its upper bound
 * before the first run and the last run's shape and size after it. */
edgec_status edgec_get_output(const edgec_model* model, int32_t index, void* data, size_t nbytes);

/* The last error on this thread: one line, "" when none. */
const char* edgec_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEC_RUNTIME_H_ */
