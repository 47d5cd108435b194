# edgec's C runtime API (runtime/edgec_runtime.h) as the CMake target edgec::runtime, a
# static library over the TVM runtime in the apache-tvm and apache-tvm-ffi wheels.
#
#   execute_process(COMMAND edgec cmake-dir OUTPUT_VARIABLE EDGEC_CMAKE_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)
#   include(${EDGEC_CMAKE_DIR}/edgec_runtime.cmake)
#   target_link_libraries(my_app PRIVATE edgec::runtime)
#   set_target_properties(my_app PROPERTIES INSTALL_RPATH "${EDGEC_RUNTIME_RPATH}" BUILD_WITH_INSTALL_RPATH ON)
#
# Finding TVM, first that applies:
#   -DTVM_PYTHON_SITE=DIR   the site-packages directory holding tvm/ and tvm_ffi/ (also the
#                           aarch64 wheels' directory for a cross build)
#   -DPython3_EXECUTABLE=PY a Python with the wheels installed (an active venv is found on
#                           its own); asked where the packages are, without importing TVM
# EDGEC_RUNTIME_RPATH is the wheels' lib directories: a program with it as RUNPATH runs
# without LD_LIBRARY_PATH as long as that environment exists ('$ORIGIN' to ship the two
# libraries beside it instead).
cmake_minimum_required(VERSION 3.18)
if(TARGET edgec::runtime)
  return()
endif()
enable_language(CXX)

set(TVM_PYTHON_SITE "" CACHE PATH "site-packages directory holding the tvm and tvm_ffi wheels")
if(TVM_PYTHON_SITE)
  set(TVM_PACKAGE_DIR "${TVM_PYTHON_SITE}/tvm")
  set(TVM_FFI_PACKAGE_DIR "${TVM_PYTHON_SITE}/tvm_ffi")
else()
  set(Python3_FIND_VIRTUALENV FIRST)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c
            "import importlib.util as u; print(';'.join(u.find_spec(p).submodule_search_locations[0] for p in ('tvm', 'tvm_ffi')))"
    OUTPUT_VARIABLE _edgec_tvm_dirs OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE _edgec_tvm_error RESULT_VARIABLE _edgec_tvm_result)
  if(NOT _edgec_tvm_result EQUAL 0)
    message(FATAL_ERROR "${Python3_EXECUTABLE} cannot find the tvm and tvm_ffi packages "
                        "(pip install apache-tvm, or pass -DTVM_PYTHON_SITE=...):\n${_edgec_tvm_error}")
  endif()
  list(GET _edgec_tvm_dirs 0 TVM_PACKAGE_DIR)
  list(GET _edgec_tvm_dirs 1 TVM_FFI_PACKAGE_DIR)
endif()

find_path(TVM_FFI_INCLUDE_DIR tvm/ffi/function.h PATHS "${TVM_FFI_PACKAGE_DIR}/include" NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
find_path(DLPACK_INCLUDE_DIR dlpack/dlpack.h
          PATHS "${TVM_FFI_PACKAGE_DIR}/include" "${TVM_FFI_PACKAGE_DIR}/3rdparty/dlpack/include"
          NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
find_library(TVM_FFI_LIBRARY tvm_ffi PATHS "${TVM_FFI_PACKAGE_DIR}/lib" NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
find_library(TVM_RUNTIME_LIBRARY tvm_runtime PATHS "${TVM_PACKAGE_DIR}/lib" NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
foreach(_var TVM_FFI_INCLUDE_DIR DLPACK_INCLUDE_DIR TVM_FFI_LIBRARY TVM_RUNTIME_LIBRARY)
  if(NOT ${_var})
    message(FATAL_ERROR "${_var} not found under ${TVM_PACKAGE_DIR} / ${TVM_FFI_PACKAGE_DIR}")
  endif()
endforeach()
message(STATUS "edgec runtime over TVM runtime ${TVM_RUNTIME_LIBRARY}, FFI ${TVM_FFI_LIBRARY}")

add_library(edgec_runtime STATIC "${CMAKE_CURRENT_LIST_DIR}/runtime/edgec_runtime.cc")
add_library(edgec::runtime ALIAS edgec_runtime)
set_target_properties(edgec_runtime PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON)
target_include_directories(edgec_runtime PUBLIC "${CMAKE_CURRENT_LIST_DIR}/runtime")
target_include_directories(edgec_runtime SYSTEM PRIVATE "${TVM_FFI_INCLUDE_DIR}" "${DLPACK_INCLUDE_DIR}")
target_compile_options(edgec_runtime PRIVATE -Wall -Wextra)
# Nothing calls libtvm_runtime directly, but it must be loaded: it registers the Relax VM
# that each library's executable deserializes into.
target_link_options(edgec_runtime INTERFACE "LINKER:--no-as-needed")
target_link_libraries(edgec_runtime PUBLIC "${TVM_RUNTIME_LIBRARY}" "${TVM_FFI_LIBRARY}" ${CMAKE_DL_LIBS})
# TVM's sort and topk kernels (TopK, NonMaxSuppression) live in libtvm_runtime_extra where the
# wheel has one; loaded the same way.
find_library(TVM_RUNTIME_EXTRA_LIBRARY tvm_runtime_extra PATHS "${TVM_PACKAGE_DIR}/lib" NO_DEFAULT_PATH
             NO_CMAKE_FIND_ROOT_PATH)
if(TVM_RUNTIME_EXTRA_LIBRARY)
  target_link_libraries(edgec_runtime PUBLIC "${TVM_RUNTIME_EXTRA_LIBRARY}")
endif()
# With OpenSSL's libcrypto (Debian: libssl-dev), edgec_open_file_verified checks Ed25519
# signatures ('edgec compile --sign'); without it, that call refuses to open anything. A
# cross build looks for it only in its sysroot: the host's libcrypto would not link.
option(EDGEC_RUNTIME_OPENSSL "Check artifact signatures with OpenSSL's libcrypto when it is found" ON)
if(EDGEC_RUNTIME_OPENSSL AND (NOT CMAKE_CROSSCOMPILING OR CMAKE_SYSROOT OR CMAKE_FIND_ROOT_PATH))
  find_package(OpenSSL COMPONENTS Crypto)
endif()
if(OpenSSL_FOUND)
  target_compile_definitions(edgec_runtime PRIVATE EDGEC_RUNTIME_WITH_OPENSSL=1)
  target_link_libraries(edgec_runtime PUBLIC OpenSSL::Crypto)
  message(STATUS "edgec runtime signatures: OpenSSL ${OPENSSL_CRYPTO_LIBRARY}")
else()
  message(STATUS "edgec runtime signatures: OpenSSL not found, edgec_open_file_verified refuses")
endif()
get_filename_component(_edgec_tvm_lib_dir "${TVM_RUNTIME_LIBRARY}" DIRECTORY)
get_filename_component(_edgec_tvm_ffi_lib_dir "${TVM_FFI_LIBRARY}" DIRECTORY)
set(EDGEC_RUNTIME_RPATH "${_edgec_tvm_lib_dir};${_edgec_tvm_ffi_lib_dir}")
