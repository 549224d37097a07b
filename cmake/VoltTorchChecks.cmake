# Facts about the LibTorch found by find_package(Torch), checked by compiling against it.

get_target_property(_volt_torch_includes torch INTERFACE_INCLUDE_DIRECTORIES)
if(NOT _volt_torch_includes)
  set(_volt_torch_includes ${TORCH_INCLUDE_DIRS})
endif()
set(VOLT_TORCH_VERSION "${Torch_VERSION}")

# DESIGN §7: upstream once proposed removing DispatchKey::DeferredInit; fall back to the testing key.
set(_volt_probe_dir ${PROJECT_BINARY_DIR}/probes)
file(WRITE ${_volt_probe_dir}/dispatch_key.cpp
  "#include <c10/core/DispatchKey.h>\nconstexpr auto k = c10::DispatchKey::DeferredInit;\nint probe() { return static_cast<int>(k); }\n")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
try_compile(VOLT_HAS_DEFERRED_INIT_KEY ${_volt_probe_dir}/build SOURCES ${_volt_probe_dir}/dispatch_key.cpp
  CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${_volt_torch_includes}" CXX_STANDARD 17)
unset(CMAKE_TRY_COMPILE_TARGET_TYPE)
set(VOLT_INIT_DISPATCH_KEY_OVERRIDE "" CACHE STRING "Force the init engine's dispatch key (to test the fallback)")
if(VOLT_INIT_DISPATCH_KEY_OVERRIDE)
  set(VOLT_INIT_DISPATCH_KEY ${VOLT_INIT_DISPATCH_KEY_OVERRIDE})
elseif(VOLT_HAS_DEFERRED_INIT_KEY)
  set(VOLT_INIT_DISPATCH_KEY DeferredInit)
else()
  set(VOLT_INIT_DISPATCH_KEY TESTING_ONLY_GenericMode)
endif()
# The sharded strategies' parameter-use key (strategies/sharding/storage_use_scope.cpp): another key of
# the wrapper block that LibTorch uses only in its own tests. Checked here, as the init key is.
set(VOLT_USE_DISPATCH_KEY TESTING_ONLY_GenericWrapper)
file(WRITE ${_volt_probe_dir}/use_key.cpp
  "#include <c10/core/DispatchKey.h>\nconstexpr auto k = c10::DispatchKey::${VOLT_USE_DISPATCH_KEY};\n"
  "static_assert(k != c10::DispatchKey::${VOLT_INIT_DISPATCH_KEY}, \"two scopes, two keys\");\n"
  "int probe() { return static_cast<int>(k); }\n")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
try_compile(VOLT_HAS_USE_KEY ${_volt_probe_dir}/build_use SOURCES ${_volt_probe_dir}/use_key.cpp
  CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${_volt_torch_includes}" CXX_STANDARD 17)
unset(CMAKE_TRY_COMPILE_TARGET_TYPE)
if(NOT VOLT_HAS_USE_KEY)
  message(FATAL_ERROR "volt: LibTorch ${Torch_VERSION} has no DispatchKey::${VOLT_USE_DISPATCH_KEY}, which "
                      "the sharded strategies intercept parameter use on; pick another unused key of the "
                      "wrapper block in cmake/VoltTorchChecks.cmake")
endif()

set(VOLT_TORCH_HAS_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR CUDA_FOUND OR CUDAToolkit_FOUND)
  set(VOLT_TORCH_HAS_CUDA ON)
endif()
message(STATUS "volt: LibTorch ${VOLT_TORCH_VERSION} (CUDA: ${VOLT_TORCH_HAS_CUDA}), init dispatch key ${VOLT_INIT_DISPATCH_KEY}")

# A pip wheel's libtorch_cuda finds NCCL, cuDNN and CUDA's libraries beside it through its $ORIGIN rpath at
# run time; the linker needs the same folders, or it picks older copies from the system (e.g. the CUDA
# toolkit's NCCL) and fails on missing symbols.
set(VOLT_TORCH_RPATH_LINK "")
file(GLOB _volt_wheel_lib_dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
foreach(_dir IN LISTS _volt_wheel_lib_dirs)
  get_filename_component(_dir "${_dir}" REALPATH)
  list(APPEND VOLT_TORCH_RPATH_LINK "-Wl,-rpath-link,${_dir}")
endforeach()
