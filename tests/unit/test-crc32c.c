/* SPDX-License-Identifier: MIT */
/* CRC-32C: the standard check value, RFC 3720 B.4 vectors, and chaining. */
#include <stdint.h>
#include <string.h>

#include <vdisk/crc32c.h>

#include "tests/lib/test.h"

static void test_check_value(void)
{
	CHECK_EQ(vd_crc32c(0, "123456789", 9), 0xe3069283u);
	CHECK_EQ(vd_crc32c(0, "", 0), 0);
}

/* RFC 3720, appendix B.4: 32 bytes of zeroes, of ones, ascending. */
static void test_rfc3720(void)
{
	uint8_t buf[32];

	memset(buf, 0, sizeof(buf));
	CHECK_EQ(vd_crc32c(0, buf, sizeof(buf)), 0x8a9136aau);
	memset(buf, 0xff, sizeof(buf));
	CHECK_EQ(vd_crc32c(0, buf, sizeof(buf)), 0x62a8ab43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	CHECK_EQ(vd_crc32c(0, buf, sizeof(buf)), 0x46dd794eu);
}

static void test_chaining(void)
{
	const char *s = "The quick brown fox jumps over the lazy dog";
	size_t len = strlen(s);

	for (size_t cut = 0; cut <= len; cut++)
		CHECK_EQ(vd_crc32c(vd_crc32c(0, s, cut), s + cut, len - cut), vd_crc32c(0, s, len));
}

int main(void)
{
	RUN(test_check_value);
	RUN(test_rfc3720);
	RUN(test_chaining);
	return test_finish();
}
