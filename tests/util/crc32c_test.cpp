#include "quartet/util/crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace quartet {
namespace {

// The check value of CRC-32C in the CRC catalogue (and every CRC-32C implementation's README).
TEST(Crc32c, PublishedCheckValue) { EXPECT_EQ(crc32c("123456789"), 0xE3069283u); }

// RFC 3720 (iSCSI), appendix B.4: 32 bytes of zeros, of ones and of 0, 1, ..., 31.
TEST(Crc32c, Rfc3720Vectors) {
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending += static_cast<char>(i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
}

TEST(Crc32c, EmptyInputIsZero) { EXPECT_EQ(crc32c(""), 0u); }

// Masked by hand: 0xE3069283 rotated right by 15 is 0x2507C60D; plus 0xA282EAD8 is 0xC78AB0E5.
TEST(Crc32c, MaskRotatesAndAddsTheConstant) {
  EXPECT_EQ(masked_crc32c("123456789"), 0xC78AB0E5u);
  EXPECT_EQ(masked_crc32c(""), 0xA282EAD8u);  // crc 0: only the constant
}

}  // namespace
}  // namespace quartet
