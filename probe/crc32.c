/* Standard CRC-32 (IEEE 802.3, reflected polynomial 0xedb88320), as zlib.crc32 computes it. */
#include "probe.h"

static u32 table[256];
static bool table_ready;

static void table_init(void)
{
	for (u32 i = 0; i < 256; i++) {
		u32 c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0xedb88320U : c >> 1;
		table[i] = c;
	}
	table_ready = true;
}

u32 crc32(const u8 *p, u64 len)
{
	u32 c = 0xffffffffU;

	if (!table_ready)
		table_init();
	while (len--)
		c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffU;
}
