# edgec's CMake module: compile ONNX models as part of a build.
#
#   execute_process(COMMAND edgec cmake-dir OUTPUT_VARIABLE EDGEC_CMAKE_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)
#   include(${EDGEC_CMAKE_DIR}/edgec.cmake)
#   edgec_add_model(digits MODEL model.onnx TARGET arm64-a72 OUTPUT digits.edgec
#                   [PROFILE mobile|profile.toml] [CALIB data.npz] [TUNING_DB dir]
#                   [INPUT_SHAPES name=1x3x224x224 ...] [PASSES pipeline] [EXTRA_ARGS ...])
#
# CALIB quantizes the model to int8 with this calibration data (compile --calib;
# --calibrator and the other quantization flags go in EXTRA_ARGS). TUNING_DB uses the
# records 'edgec tune' wrote to that directory (compile --tuning-db). Relative
# MODEL, CALIB, TUNING_DB and .toml paths are taken from the current source directory.
#
# The compile writes a depfile, so editing the model, its external weights, the
# profile file (and the files it extends), a custom target file, the calibration
# data or the tuning records triggers a rebuild and nothing else does. EDGEC_EXECUTABLE
# overrides which edgec runs; EDGEC_CACHE_DIR (a cache variable or the environment)
# shares finished compiles between build trees.
cmake_minimum_required(VERSION 3.20)  # DEPFILE with the Makefile generators

if(NOT EDGEC_EXECUTABLE)
  find_program(EDGEC_EXECUTABLE edgec REQUIRED)
endif()
set(EDGEC_CACHE_DIR "$ENV{EDGEC_CACHE_DIR}" CACHE PATH "edgec compile cache (empty: none)")

function(edgec_add_model name)
  cmake_parse_arguments(ARG "" "MODEL;TARGET;OUTPUT;PASSES;PROFILE;CALIB;TUNING_DB" "INPUT_SHAPES;EXTRA_ARGS" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    # A misspelt keyword must not vanish: the model would silently compile without it.
    message(FATAL_ERROR "edgec_add_model(${name}): unknown arguments: ${ARG_UNPARSED_ARGUMENTS} "
                        "(known: MODEL TARGET OUTPUT PASSES PROFILE CALIB TUNING_DB INPUT_SHAPES EXTRA_ARGS)")
  endif()
  foreach(required MODEL TARGET)
    if(NOT ARG_${required})
      message(FATAL_ERROR "edgec_add_model(${name}): ${required} is required")
    endif()
  endforeach()
  if(NOT ARG_OUTPUT)
    set(ARG_OUTPUT "${name}.edgec")
  endif()
  get_filename_component(model "${ARG_MODEL}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  get_filename_component(output "${ARG_OUTPUT}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
  get_filename_component(output_dir "${output}" DIRECTORY)
  file(MAKE_DIRECTORY "${output_dir}")
  set(target "${ARG_TARGET}")
  if(target MATCHES "\\.toml$")
    get_filename_component(target "${target}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()

  set(args compile "${model}" --target "${target}" -o "${output}" --depfile "${output}.d" --quiet)
  if(ARG_PROFILE)
    set(profile "${ARG_PROFILE}")
    if(profile MATCHES "\\.toml$")
      get_filename_component(profile "${profile}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    endif()
    list(APPEND args --profile "${profile}")
  endif()
  if(ARG_CALIB)
    get_filename_component(calib "${ARG_CALIB}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND args --calib "${calib}")
  endif()
  if(ARG_TUNING_DB)
    # Its record files reach the build through the depfile, like the calibration data.
    get_filename_component(tuning_db "${ARG_TUNING_DB}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND args --tuning-db "${tuning_db}")
  endif()
  foreach(shape IN LISTS ARG_INPUT_SHAPES)
    list(APPEND args --input-shape "${shape}")
  endforeach()
  if(ARG_PASSES)
    list(APPEND args --passes "${ARG_PASSES}")
  endif()
  if(EDGEC_CACHE_DIR)
    list(APPEND args --cache-dir "${EDGEC_CACHE_DIR}")
  endif()
  list(APPEND args ${ARG_EXTRA_ARGS})

  add_custom_command(
    OUTPUT "${output}"
    COMMAND "${EDGEC_EXECUTABLE}" ${args}
    DEPENDS "${model}"
    DEPFILE "${output}.d"
    COMMENT "edgec: compiling ${ARG_MODEL} for ${ARG_TARGET}"
    VERBATIM)
  add_custom_target(${name} ALL DEPENDS "${output}")
  set_target_properties(${name} PROPERTIES EDGEC_ARTIFACT "${output}")
endfunction()
