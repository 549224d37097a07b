# checkpoint.fuzz_replay: the checkpoint readers' fuzz corpus and its generated hostile variants, replayed
# under ASan + UBSan by fuzz/replay.sh (which builds the fuzzers in <build>/fuzz with clang).
# Included from tests/CMakeLists.txt. The parsers do not depend on the LibTorch version, so the test runs
# on the 1.x leg only, and only where clang++-14 and the python3 that mutate.py runs under are found.
find_program(VOLT_FUZZ_CLANGXX clang++-14)
find_program(VOLT_FUZZ_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(VOLT_FUZZ_CLANGXX AND VOLT_FUZZ_PYTHON AND VOLT_TORCH_VERSION AND VOLT_TORCH_VERSION VERSION_LESS 2)
  set(_volt_fuzz_cmake_args "")
  if(Torch_DIR)  # the fuzz build links the LibTorch this build found
    set(_volt_fuzz_cmake_args "-DTorch_DIR=${Torch_DIR}")
  endif()
  add_test(NAME checkpoint.fuzz_replay
    COMMAND ${PROJECT_SOURCE_DIR}/fuzz/replay.sh ${PROJECT_BINARY_DIR}/fuzz ${_volt_fuzz_cmake_args})
  set_tests_properties(checkpoint.fuzz_replay PROPERTIES
    LABELS fuzz TIMEOUT 1200
    ENVIRONMENT "VOLT_FUZZ_CXX=${VOLT_FUZZ_CLANGXX};VOLT_FUZZ_PYTHON=${VOLT_FUZZ_PYTHON}")
else()
  message(STATUS "volt: checkpoint.fuzz_replay not added (needs clang++-14, /usr/bin/python3 and LibTorch < 2; "
                 "LibTorch ${VOLT_TORCH_VERSION})")
endif()
