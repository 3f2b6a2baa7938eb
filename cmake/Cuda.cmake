# The CUDA backend (QUARTET_CUDA): ON builds it wherever nvcc is found (CI, and machines that
# build for a GPU elsewhere: scripts/gpu-bundle.sh); AUTO, the default, only where nvcc is found
# AND this machine has an NVIDIA GPU, since compiling the kernels for three GPU generations is
# most of a first build and is of no use without one. It is built for Hopper (sm_90a: wgmma and
# TMA need the "a" target) and Blackwell (sm_100a, sm_120a), so the Blackwell code paths keep
# compiling on machines without those GPUs. Without it the program is CPU-only and says so when
# --device cuda is asked for.
set(QUARTET_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO (if nvcc and a GPU are found), ON (if nvcc is found) or OFF")
set_property(CACHE QUARTET_CUDA PROPERTY STRINGS AUTO ON OFF)
if(NOT QUARTET_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "QUARTET_CUDA must be AUTO, ON or OFF, got '${QUARTET_CUDA}'")
endif()

# Whether this machine has an NVIDIA GPU: the driver lists one in /proc, or nvidia-smi does.
function(quartet_machine_has_gpu out)
  file(GLOB gpus /proc/driver/nvidia/gpus/*)
  if(gpus)
    set(${out} ON PARENT_SCOPE)
    return()
  endif()
  find_program(QUARTET_NVIDIA_SMI nvidia-smi)
  if(QUARTET_NVIDIA_SMI)
    execute_process(COMMAND ${QUARTET_NVIDIA_SMI} -L RESULT_VARIABLE code OUTPUT_VARIABLE listed ERROR_QUIET)
    if(code EQUAL 0 AND listed MATCHES "GPU")
      set(${out} ON PARENT_SCOPE)
      return()
    endif()
  endif()
  set(${out} OFF PARENT_SCOPE)
endfunction()

set(QUARTET_WITH_CUDA OFF)
set(quartet_cuda_wanted ${QUARTET_CUDA})
if(QUARTET_CUDA STREQUAL "AUTO")
  quartet_machine_has_gpu(quartet_gpu_here)
  if(NOT quartet_gpu_here)
    set(quartet_cuda_wanted OFF)
    message(STATUS "quartet: no NVIDIA GPU on this machine; the CUDA backend is not built "
                   "(-DQUARTET_CUDA=ON builds it wherever nvcc is found)")
  endif()
endif()
if(NOT quartet_cuda_wanted STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER)
    # nvcc is often not on PATH on a fresh machine; /usr/local/cuda is where the toolkit lives.
    if(EXISTS /usr/local/cuda/bin/nvcc)
      set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
    endif()
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90a 100a 120a)
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc's C++20 flag (nvcc 12+ has it): tell it.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(QUARTET_WITH_CUDA ON)
    message(STATUS "quartet: CUDA backend ON (${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(QUARTET_CUDA STREQUAL "ON")
    message(FATAL_ERROR "QUARTET_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "quartet: no CUDA compiler found; the CUDA backend is not built")
  endif()
endif()
