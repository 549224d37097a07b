# distributed/ on LibTorch's c10d. ProcessGroupGloo.hpp needs gloo's headers, which neither LibTorch ships:
# Debian's libgloo-dev (gloo of 2022-05, the one Debian's libtorch 1.13 links as libgloo.so.0) serves both
# legs; the wheel links its own gloo statically, and volt uses no gloo type by value (DESIGN §7).
find_path(VOLT_GLOO_INCLUDE_DIR gloo/rendezvous/store.h)
if(NOT VOLT_GLOO_INCLUDE_DIR)
  message(FATAL_ERROR "gloo's headers (gloo/rendezvous/store.h) were not found: install Debian's libgloo-dev "
                      "(scripts/install-deps.sh does) or pass -DVOLT_GLOO_INCLUDE_DIR=<dir>")
endif()
set(_volt_dist_definitions USE_C10D_GLOO)
set(_volt_dist_includes "")
if(NOT VOLT_GLOO_INCLUDE_DIR STREQUAL "/usr/include")  # never reorder the system directory before LibTorch's
  list(APPEND _volt_dist_includes ${VOLT_GLOO_INCLUDE_DIR})
endif()

# ProcessGroupNCCL: only where LibTorch has CUDA and volt's CUDA build is on; NCCL's header comes from the
# wheel's nvidia-nccl package beside torch.
set(VOLT_WITH_C10D_NCCL OFF)
if(VOLT_WITH_CUDA)
  find_path(VOLT_NCCL_INCLUDE_DIR nccl.h
    HINTS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include" "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include/nccl"
    NO_DEFAULT_PATH)
  if(VOLT_NCCL_INCLUDE_DIR)
    set(VOLT_WITH_C10D_NCCL ON)
    list(APPEND _volt_dist_definitions USE_C10D_NCCL VOLT_WITH_C10D_NCCL=1)
    list(APPEND _volt_dist_includes ${VOLT_NCCL_INCLUDE_DIR})
  else()
    message(WARNING "volt: LibTorch has CUDA but nccl.h was not found beside it: no NCCL process group")
  endif()
endif()
if(NOT VOLT_WITH_C10D_NCCL)
  list(APPEND _volt_dist_definitions VOLT_WITH_C10D_NCCL=0)
endif()
# Only process_group.cpp sees c10d's backends; it skips the shared <torch/torch.h> precompiled header, whose
# definitions would differ.
set_source_files_properties(src/distributed/process_group.cpp PROPERTIES
  COMPILE_DEFINITIONS "${_volt_dist_definitions}"
  INCLUDE_DIRECTORIES "${_volt_dist_includes}"
  SKIP_PRECOMPILE_HEADERS ON)
message(STATUS "volt: c10d Gloo (headers in ${VOLT_GLOO_INCLUDE_DIR}), NCCL ${VOLT_WITH_C10D_NCCL}")
