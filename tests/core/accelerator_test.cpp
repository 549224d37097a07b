#include "volt/core/accelerator.h"
#include "volt/error.h"

#include <gtest/gtest.h>

using volt::Accelerator;

TEST(Accelerator, CpuResolvesToTheCpuDevice) {
  Accelerator cpu("cpu");
  EXPECT_EQ(cpu.type(), "cpu");
  ASSERT_EQ(cpu.devices().size(), 1u);
  EXPECT_TRUE(cpu.device_for_local_rank(0).is_cpu());
}

TEST(Accelerator, CpuDevicesCountProcesses) {
  Accelerator cpu("cpu", 3);
  EXPECT_EQ(cpu.devices().size(), 3u);
  EXPECT_THROW(cpu.device_for_local_rank(3), volt::Error);
}

TEST(Accelerator, AutoPicksCudaOnlyWhenAGpuIsVisible) {
  Accelerator automatic("auto");
  EXPECT_EQ(automatic.type(), Accelerator::cuda_available() ? "cuda" : "cpu");
}

TEST(Accelerator, CudaWithoutAGpuIsAClearError) {
  if (Accelerator::cuda_available()) GTEST_SKIP() << "a GPU is visible";
  for (const char* name : {"cuda", "gpu"}) {
    try {
      Accelerator a(name);
      FAIL() << name << " accepted without a GPU";
    } catch (const volt::Error& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA GPU is visible"), std::string::npos) << e.what();
    }
  }
}

TEST(Accelerator, CudaResolvesToCountedDevices) {
  if (!Accelerator::cuda_available()) GTEST_SKIP() << "no GPU";
  Accelerator cuda("cuda", 1);
  EXPECT_EQ(cuda.type(), "cuda");
  EXPECT_TRUE(cuda.device_for_local_rank(0).is_cuda());
  EXPECT_THROW(Accelerator("cuda", Accelerator::cuda_device_count() + 1), volt::Error);
}

TEST(Accelerator, UnknownNamesAndBadCountsAreRejected) {
  try {
    Accelerator a("tpu");
    FAIL();
  } catch (const volt::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'tpu'"), std::string::npos);
    EXPECT_NE(message.find("cpu, cuda, gpu, auto"), std::string::npos);
  }
  EXPECT_THROW(Accelerator("cpu", 0), volt::Error);
  EXPECT_THROW(Accelerator("cpu", -2), volt::Error);
}
