/* c_run: edgec_runtime.h driven from plain C, for tests/test_c_runtime.py.
 *
 *   c_run file|memory|misaligned ARTIFACT DIR
 *
 * Opens ARTIFACT from its path, from a heap copy (memory), or from a copy one byte
 * past an aligned address (misaligned: the weights cannot be used in place), prints
 * each input and output as "input|output INDEX NAME DTYPE D0xD1.. NBYTES", checks the
 * usage errors on stdout ("probe: ..."), sets input i from DIR/in<i>.bin (raw bytes),
 * runs, prints each output as the run gave it ("ran output ...": rows the data decides are
 * cut), and writes output i to DIR/out<i>.bin. Errors: edgec_last_error() on stderr,
 * exit status the edgec_status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgec_runtime.h"

static char* read_file(const char* path, size_t* size, size_t offset) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char* base = malloc(*size + offset + 1);
  if (base && fread(base + offset, 1, *size, f) != *size) {
    free(base);
    base = NULL;
  }
  fclose(f);
  return base;
}

static int fail(edgec_status status) {
  fprintf(stderr, "%s\n", edgec_last_error());
  return (int)status;
}

/* The status then the message: C leaves the order of a call's arguments open. */
static void probe(edgec_status status) { printf("probe: %d %s\n", (int)status, edgec_last_error()); }

static void print_info(const char* kind, int32_t index, const edgec_tensor_info* info) {
  printf("%s %d %s %s ", kind, index, info->name, info->dtype);
  for (int32_t d = 0; d < info->ndim; ++d) printf(d ? "x%lld" : "%lld", (long long)info->shape[d]);
  printf(" %zu\n", info->nbytes);
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: c_run file|memory|misaligned ARTIFACT DIR\n");
    return 2;
  }
  edgec_model* model = NULL;
  edgec_status status;
  char* buffer = NULL;
  if (strcmp(argv[1], "file") == 0) {
    status = edgec_open_file(argv[2], &model);
  } else {
    size_t offset = strcmp(argv[1], "misaligned") == 0 ? 1 : 0, size = 0;
    buffer = read_file(argv[2], &size, 64);  /* malloc aligns to 16; +64 keeps that */
    if (!buffer) {
      fprintf(stderr, "cannot read %s\n", argv[2]);
      return 1;
    }
    if (offset) memmove(buffer + 64 + offset, buffer + 64, size);
    status = edgec_open_memory(buffer + 64 + offset, size, argv[2], &model);
  }
  if (status != EDGEC_OK) return fail(status);

  edgec_tensor_info info;
  for (int32_t i = 0; i < edgec_num_inputs(model); ++i) {
    if (edgec_input_info(model, i, &info) != EDGEC_OK) return fail(EDGEC_ERROR_RUN);
    print_info("input", i, &info);
    if (edgec_input_index(model, info.name) != i) return fail(EDGEC_ERROR_RUN);
  }
  for (int32_t i = 0; i < edgec_num_outputs(model); ++i) {
    if (edgec_output_info(model, i, &info) != EDGEC_OK) return fail(EDGEC_ERROR_RUN);
    print_info("output", i, &info);
  }
  /* Usage errors: each returns EDGEC_ERROR_USAGE with a message. */
  char scratch[16];
  probe(edgec_input_info(model, edgec_num_inputs(model), &info));
  probe(edgec_run(model));
  probe(edgec_get_output(model, 0, scratch, sizeof scratch));
  probe(edgec_set_input(model, 0, scratch, 1));
  printf("probe: %d\n", edgec_input_index(model, "no such input"));

  char path[4096];
  for (int32_t i = 0; i < edgec_num_inputs(model); ++i) {
    edgec_input_info(model, i, &info);
    snprintf(path, sizeof path, "%s/in%d.bin", argv[3], i);
    size_t size = 0;
    char* data = read_file(path, &size, 0);
    if (!data) {
      fprintf(stderr, "cannot read %s\n", path);
      return 1;
    }
    status = edgec_set_input(model, i, data, size);
    free(data);
    if (status != EDGEC_OK) return fail(status);
  }
  if ((status = edgec_run(model)) != EDGEC_OK) return fail(status);
  for (int32_t i = 0; i < edgec_num_outputs(model); ++i) {
    edgec_output_info(model, i, &info);
    print_info("ran output", i, &info);
    char* data = malloc(info.nbytes + 1);
    if ((status = edgec_get_output(model, i, data, info.nbytes)) != EDGEC_OK) return fail(status);
    snprintf(path, sizeof path, "%s/out%d.bin", argv[3], i);
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(data, 1, info.nbytes, f) != info.nbytes) {
      fprintf(stderr, "cannot write %s\n", path);
      return 1;
    }
    fclose(f);
    free(data);
  }
  edgec_close(model);
  free(buffer);
  return 0;
}
