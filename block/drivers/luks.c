/* SPDX-License-Identifier: MIT */
/*
 * The "luks" format: LUKS1 encrypted images as QEMU 7.2's block/crypto.c
 * and crypto/block-luks.c read, write and create them.  Our reading of the
 * format is in docs/formats.md ("luks"); in short:
 *
 *   a 592-byte big-endian header (magic "LUKS\xba\xbe", version 1, cipher
 *   name "aes", cipher mode "xts-plain64", hash spec "sha256", payload
 *   offset in sectors, master key bytes, the master key's PBKDF2 digest with
 *   its salt and iterations, a UUID, eight key slots), then per active slot
 *   the master key split into 4000 stripes (the anti-forensic splitter) and
 *   encrypted with a key derived from the passphrase by PBKDF2, then the
 *   payload: the guest's data, encrypted per 512-byte sector with the
 *   master key and an IV from the sector number (plain, plain64, essiv).
 *
 * All cryptography is nettle's (AES, Twofish, Serpent, XTS, CBC, SHA,
 * PBKDF2) and GnuTLS's random numbers; this file only lays the bytes out.
 *
 * Header fields are hostile until checked at open, once: the slots must lie
 * between the header and the payload without overlapping (QEMU's checks),
 * the payload inside the file, stripes must be 4000 and key bytes match the
 * cipher (which bounds every allocation to 64 * 4000 bytes), and PBKDF2
 * iterations are capped (LUKS_MAX_ITERATIONS) so a crafted header cannot
 * keep us deriving keys for minutes.
 *
 * Without a secret, an open with VD_OPEN_NO_IO (vdisk info, as qemu-img
 * info) reads the header only; any other open needs key-secret=ID.
 * Unlocking runs PBKDF2 on a worker thread, not on the node's loop.
 * Requests are encrypted or decrypted in bounce buffers of at most
 * LUKS_MAX_BOUNCE bytes, so the guest's buffers are never touched by
 * ciphertext and the loop is never held for long.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nettle/cbc.h>
#include <nettle/memxor.h>
#include <nettle/nettle-meta.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <nettle/xts.h>

#include <vdisk/aio.h>
#include <vdisk/secret.h>

#include "block/drivers.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_MAGIC_LEN 6
#define LUKS_VERSION 1
#define LUKS_SECTOR 512
#define LUKS_HEADER_SIZE 592
#define LUKS_NUM_SLOTS 8
#define LUKS_SLOT_ENABLED 0x00AC71F3u
#define LUKS_SLOT_DISABLED 0x0000DEADu
#define LUKS_STRIPES 4000
#define LUKS_SALT_LEN 32
#define LUKS_DIGEST_LEN 20
#define LUKS_UUID_LEN 40
/* Key slots start after the first 4 KiB (QEMU and cryptsetup). */
#define LUKS_KEY_SLOT_OFFSET 4096
#define LUKS_MIN_ITERATIONS 1000
/* Ours: a bound on PBKDF2 iterations read from an image.  QEMU's default
 * (iter-time=2000 ms) gives a few million on today's CPUs; 2^25 leaves room
 * for machines several times faster while bounding a hostile header to
 * seconds per slot. */
#define LUKS_MAX_ITERATIONS (1u << 25)
#define LUKS_MAX_KEY_BYTES 64
#define LUKS_MAX_BOUNCE (1u << 20)
#define LUKS_BLOCK 16 /* the block size of every cipher we take */

/* Header layout (big-endian), LUKS1 on-disk format specification. */
enum {
	H_MAGIC = 0,
	H_VERSION = 6,
	H_CIPHER_NAME = 8, /* 32 bytes */
	H_CIPHER_MODE = 40, /* 32 bytes */
	H_HASH_SPEC = 72, /* 32 bytes */
	H_PAYLOAD_OFFSET = 104,
	H_KEY_BYTES = 108,
	H_MK_DIGEST = 112, /* 20 bytes */
	H_MK_DIGEST_SALT = 132, /* 32 bytes */
	H_MK_DIGEST_ITER = 164,
	H_UUID = 168, /* 40 bytes */
	H_SLOTS = 208, /* 8 slots of 48 bytes */
	SLOT_SIZE = 48,
	S_ACTIVE = 0,
	S_ITERATIONS = 4,
	S_SALT = 8, /* 32 bytes */
	S_KEY_OFFSET = 40,
	S_STRIPES = 44,
};

struct luks_cipher_alg {
	const char *name; /* QEMU's QCryptoCipherAlgorithm name */
	const char *family; /* the name in the LUKS header */
	unsigned key_bytes;
	const struct nettle_cipher *nc;
};

static const struct luks_cipher_alg cipher_algs[] = {
	{"aes-128", "aes", 16, &nettle_aes128},
	{"aes-192", "aes", 24, &nettle_aes192},
	{"aes-256", "aes", 32, &nettle_aes256},
	{"serpent-128", "serpent", 16, &nettle_serpent128},
	{"serpent-192", "serpent", 24, &nettle_serpent192},
	{"serpent-256", "serpent", 32, &nettle_serpent256},
	{"twofish-128", "twofish", 16, &nettle_twofish128},
	{"twofish-192", "twofish", 24, &nettle_twofish192},
	{"twofish-256", "twofish", 32, &nettle_twofish256},
};

typedef void luks_pbkdf2_fn(size_t key_length, const uint8_t *key, unsigned iterations,
			    size_t salt_length, const uint8_t *salt, size_t length, uint8_t *dst);

struct luks_hash_alg {
	const char *name;
	const struct nettle_hash *nh;
	luks_pbkdf2_fn *pbkdf2;
};

static const struct luks_hash_alg hash_algs[] = {
	{"sha1", &nettle_sha1, pbkdf2_hmac_sha1},
	{"sha256", &nettle_sha256, pbkdf2_hmac_sha256},
	{"sha512", &nettle_sha512, pbkdf2_hmac_sha512},
};

/* Room for the context and digest of every hash above. */
union luks_hash_ctx {
	struct sha1_ctx sha1;
	struct sha256_ctx sha256;
	struct sha512_ctx sha512;
};
#define LUKS_MAX_DIGEST SHA512_DIGEST_SIZE

enum luks_mode {
	MODE_CBC,
	MODE_XTS
};
static const char *const mode_names[] = {"cbc", "xts", NULL};
enum luks_ivgen {
	IVGEN_PLAIN,
	IVGEN_PLAIN64,
	IVGEN_ESSIV
};
static const char *const ivgen_names[] = {"plain", "plain64", "essiv", NULL};

/* What a header's cipher name, mode and hash spec say. */
struct luks_spec {
	const struct luks_cipher_alg *cipher;
	enum luks_mode mode;
	enum luks_ivgen ivgen;
	const struct luks_hash_alg *ivgen_hash; /* essiv only */
	const struct luks_cipher_alg *essiv_cipher;
	const struct luks_hash_alg *hash;
	unsigned key_bytes; /* the master key: twice the cipher's for xts */
};

/* A keyed cipher with its IV generator: one for the payload (master key),
 * one per unlock attempt (a slot's key). */
struct luks_crypt {
	const struct luks_spec *spec;
	void *enc, *dec, *twk, *essiv; /* nettle contexts */
};

struct luks_slot {
	uint32_t active, iterations, key_offset, stripes;
	uint8_t salt[LUKS_SALT_LEN];
};

struct luks_state {
	uint8_t header[LUKS_HEADER_SIZE];
	struct luks_spec spec;
	struct luks_slot slots[LUKS_NUM_SLOTS];
	uint32_t payload_sector;
	uint32_t mk_iterations;
	char uuid[LUKS_UUID_LEN + 1];
	bool unlocked; /* false: opened without I/O (header only) */
	struct luks_crypt crypt;
};

static const struct luks_cipher_alg *find_cipher(const char *family, unsigned key_bytes)
{
	for (size_t i = 0; i < sizeof(cipher_algs) / sizeof(cipher_algs[0]); i++)
		if (!strcmp(cipher_algs[i].family, family) && cipher_algs[i].key_bytes == key_bytes)
			return &cipher_algs[i];
	return NULL;
}

static const struct luks_hash_alg *find_hash(const char *name)
{
	for (size_t i = 0; i < sizeof(hash_algs) / sizeof(hash_algs[0]); i++)
		if (!strcmp(hash_algs[i].name, name))
			return &hash_algs[i];
	return NULL;
}

/* ESSIV encrypts the IV with the same cipher family keyed by the hash of
 * the key, so the key size is the hash's digest size (QEMU's
 * qcrypto_block_luks_essiv_cipher). */
static int essiv_cipher(struct luks_spec *sp, struct vd_error *err)
{
	unsigned digest = sp->ivgen_hash->nh->digest_size;

	static const char *const shown[][2] = {
		{"aes", "AES"}, {"serpent", "Serpent"}, {"twofish", "Twofish"}};
	const char *family = sp->cipher->family;

	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
		if (!strcmp(shown[i][0], family))
			family = shown[i][1];
	sp->essiv_cipher = find_cipher(sp->cipher->family, digest);
	if (!sp->essiv_cipher)
		return vd_error_set(err, -ENOTSUP, "No %s cipher with key size %u available",
				    family, digest);
	return 0;
}

/* ---- keyed ciphers and IVs ------------------------------------------- */

static void crypt_free(struct luks_crypt *c)
{
	void *ctx[] = {c->enc, c->dec, c->twk, c->essiv};
	size_t sizes[] = {c->spec ? c->spec->cipher->nc->context_size : 0,
			  c->spec ? c->spec->cipher->nc->context_size : 0,
			  c->spec ? c->spec->cipher->nc->context_size : 0,
			  c->spec && c->spec->essiv_cipher ? c->spec->essiv_cipher->nc->context_size
							   : 0};

	for (int i = 0; i < 4; i++) {
		if (ctx[i]) {
			vd_memzero_explicit(ctx[i], sizes[i]);
			free(ctx[i]);
		}
	}
	memset(c, 0, sizeof(*c));
}

/* Key @c with @key (spec->key_bytes of it). */
static int crypt_init(struct luks_crypt *c, const struct luks_spec *sp, const uint8_t *key)
{
	const struct nettle_cipher *nc = sp->cipher->nc;

	memset(c, 0, sizeof(*c));
	c->spec = sp;
	c->enc = malloc(nc->context_size);
	c->dec = malloc(nc->context_size);
	if (!c->enc || !c->dec)
		goto nomem;
	nc->set_encrypt_key(c->enc, key);
	nc->set_decrypt_key(c->dec, key);
	if (sp->mode == MODE_XTS) {
		c->twk = malloc(nc->context_size);
		if (!c->twk)
			goto nomem;
		nc->set_encrypt_key(c->twk, key + sp->cipher->key_bytes);
	}
	if (sp->ivgen == IVGEN_ESSIV) {
		const struct nettle_hash *h = sp->ivgen_hash->nh;
		uint8_t salt[LUKS_MAX_DIGEST];
		union luks_hash_ctx hctx;

		c->essiv = malloc(sp->essiv_cipher->nc->context_size);
		if (!c->essiv)
			goto nomem;
		h->init(&hctx);
		h->update(&hctx, sp->key_bytes, key);
		h->digest(&hctx, h->digest_size, salt);
		sp->essiv_cipher->nc->set_encrypt_key(c->essiv, salt);
		vd_memzero_explicit(salt, sizeof(salt));
		vd_memzero_explicit(&hctx, sizeof(hctx));
	}
	return 0;
nomem:
	crypt_free(c);
	return -ENOMEM;
}

static void make_iv(const struct luks_crypt *c, uint64_t sector, uint8_t iv[LUKS_BLOCK])
{
	memset(iv, 0, LUKS_BLOCK);
	switch (c->spec->ivgen) {
	case IVGEN_PLAIN:
		st_le32(iv, (uint32_t)sector);
		break;
	case IVGEN_PLAIN64:
		st_le64(iv, sector);
		break;
	case IVGEN_ESSIV:
		st_le64(iv, sector);
		c->spec->essiv_cipher->nc->encrypt(c->essiv, LUKS_BLOCK, iv, iv);
		break;
	}
}

/*
 * En- or decrypt @len bytes at @buf in place, sector by sector from
 * @sector (the IV of each).  @len is a multiple of LUKS_BLOCK; a last
 * partial sector is processed as a shorter message, as QEMU and cryptsetup
 * do for key material.
 */
static void crypt_sectors(const struct luks_crypt *c, uint64_t sector, uint8_t *buf, size_t len,
			  bool encrypt)
{
	const struct nettle_cipher *nc = c->spec->cipher->nc;
	uint8_t iv[LUKS_BLOCK];

	assert(len % LUKS_BLOCK == 0);
	for (size_t off = 0; off < len; off += LUKS_SECTOR, sector++) {
		size_t n = len - off < LUKS_SECTOR ? len - off : LUKS_SECTOR;

		make_iv(c, sector, iv);
		if (c->spec->mode == MODE_XTS) {
			if (encrypt)
				xts_encrypt_message(c->enc, c->twk, nc->encrypt, iv, n, buf + off,
						    buf + off);
			else
				xts_decrypt_message(c->dec, c->twk, nc->decrypt, nc->encrypt, iv, n,
						    buf + off, buf + off);
		} else {
			if (encrypt)
				cbc_encrypt(c->enc, nc->encrypt, LUKS_BLOCK, iv, n, buf + off,
					    buf + off);
			else
				cbc_decrypt(c->dec, nc->decrypt, LUKS_BLOCK, iv, n, buf + off,
					    buf + off);
		}
	}
}

/* ---- the anti-forensic splitter (LUKS1 spec, section 2.4) ------------- */

/* Replace each digest-sized piece of @block by H(be32(index) || piece),
 * the last piece truncated. */
static void af_diffuse(const struct nettle_hash *h, uint8_t *block, size_t len)
{
	union luks_hash_ctx hctx;
	uint8_t digest[LUKS_MAX_DIGEST], be[4];
	uint32_t i = 0;

	for (size_t off = 0; off < len; off += h->digest_size, i++) {
		size_t n = len - off < h->digest_size ? len - off : h->digest_size;

		st_be32(be, i);
		h->init(&hctx);
		h->update(&hctx, 4, be);
		h->update(&hctx, n, block + off);
		h->digest(&hctx, h->digest_size, digest);
		memcpy(block + off, digest, n);
	}
	vd_memzero_explicit(&hctx, sizeof(hctx));
	vd_memzero_explicit(digest, sizeof(digest));
}

static void af_merge(const struct nettle_hash *h, size_t bs, unsigned stripes, const uint8_t *in,
		     uint8_t *out)
{
	memset(out, 0, bs);
	for (unsigned i = 0; i + 1 < stripes; i++) {
		memxor(out, in + (size_t)i * bs, bs);
		af_diffuse(h, out, bs);
	}
	memxor(out, in + (size_t)(stripes - 1) * bs, bs);
}

static int af_split(const struct nettle_hash *h, size_t bs, unsigned stripes, const uint8_t *in,
		    uint8_t *out)
{
	uint8_t block[LUKS_MAX_KEY_BYTES] = {0};

	if (gnutls_rnd(GNUTLS_RND_RANDOM, out, (size_t)(stripes - 1) * bs) < 0)
		return -EIO;
	for (unsigned i = 0; i + 1 < stripes; i++) {
		memxor(block, out + (size_t)i * bs, bs);
		af_diffuse(h, block, bs);
	}
	memxor3(out + (size_t)(stripes - 1) * bs, block, in, bs);
	vd_memzero_explicit(block, sizeof(block));
	return 0;
}

/* ---- header parsing ---------------------------------------------------- */

/* A NUL-terminated string field of @len bytes, or NULL. */
static const char *field_str(const uint8_t *h, size_t off, size_t len)
{
	return memchr(h + off, 0, len) ? (const char *)h + off : NULL;
}

static size_t splitkey_sectors(unsigned key_bytes, unsigned stripes)
{
	/* As cryptsetup (and QEMU): whole sectors, then whole 4 KiB units. */
	size_t sectors = ((size_t)key_bytes * stripes + LUKS_SECTOR - 1) / LUKS_SECTOR;
	size_t unit = LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR;

	return (sectors + unit - 1) / unit * unit;
}

/* Parse cipher name, mode ("xts-plain64", "cbc-essiv:sha256") and hash for
 * @key_bytes into @sp. */
static int parse_spec(struct luks_spec *sp, const char *name, const char *mode, const char *hash,
		      unsigned key_bytes, struct vd_error *err)
{
	char buf[33], *dash, *colon;
	unsigned cipher_bytes;
	int i;

	memset(sp, 0, sizeof(*sp));
	snprintf(buf, sizeof(buf), "%s", mode);
	dash = strchr(buf, '-');
	if (!dash)
		return vd_error_set(err, -ENOTSUP, "Unsupported LUKS cipher mode '%s'", mode);
	*dash = 0;
	colon = strchr(dash + 1, ':');
	if (colon)
		*colon = 0;
	for (i = 0; mode_names[i] && strcmp(mode_names[i], buf); i++)
		;
	if (!mode_names[i])
		return vd_error_set(err, -ENOTSUP, "Unsupported LUKS cipher mode '%s'", buf);
	sp->mode = (enum luks_mode)i;
	for (i = 0; ivgen_names[i] && strcmp(ivgen_names[i], dash + 1); i++)
		;
	if (!ivgen_names[i])
		return vd_error_set(err, -ENOTSUP, "Unsupported LUKS IV generator '%s'", dash + 1);
	sp->ivgen = (enum luks_ivgen)i;
	if (sp->ivgen == IVGEN_ESSIV) {
		if (!colon)
			return vd_error_set(err, -EINVAL,
					    "Missing IV generator hash specification");
		sp->ivgen_hash = find_hash(colon + 1);
		if (!sp->ivgen_hash)
			return vd_error_set(err, -ENOTSUP, "Unsupported LUKS IV hash '%s'",
					    colon + 1);
	} else if (colon) {
		return vd_error_set(err, -EINVAL, "IV generator '%s' takes no hash", dash + 1);
	}
	sp->hash = find_hash(hash);
	if (!sp->hash)
		return vd_error_set(err, -ENOTSUP, "Unsupported LUKS hash '%s'", hash);
	if (key_bytes == 0 || key_bytes > LUKS_MAX_KEY_BYTES ||
	    (sp->mode == MODE_XTS && key_bytes % 2))
		return vd_error_set(err, -EINVAL, "Invalid LUKS master key length %u", key_bytes);
	cipher_bytes = sp->mode == MODE_XTS ? key_bytes / 2 : key_bytes;
	sp->cipher = find_cipher(name, cipher_bytes);
	if (!sp->cipher)
		return vd_error_set(err, -ENOTSUP,
				    "Unsupported LUKS cipher '%s' with a %u-byte key", name,
				    cipher_bytes);
	sp->key_bytes = key_bytes;
	if (sp->ivgen == IVGEN_ESSIV)
		return essiv_cipher(sp, err);
	return 0;
}

static int parse_header(struct luks_state *s, int64_t file_size, struct vd_error *err)
{
	const uint8_t *h = s->header;
	const char *name, *mode, *hash;
	uint32_t version;
	int ret;

	if (memcmp(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN))
		return vd_error_set(err, -EINVAL, "Volume is not in LUKS format");
	version = ld_be16(h + H_VERSION);
	if (version != LUKS_VERSION)
		return vd_error_set(err, -ENOTSUP, "LUKS version %" PRIu32 " is not supported",
				    version);
	name = field_str(h, H_CIPHER_NAME, 32);
	mode = field_str(h, H_CIPHER_MODE, 32);
	hash = field_str(h, H_HASH_SPEC, 32);
	if (!name)
		return vd_error_set(err, -EINVAL, "LUKS header cipher name is not NUL terminated");
	if (!mode)
		return vd_error_set(err, -EINVAL, "LUKS header cipher mode is not NUL terminated");
	if (!hash)
		return vd_error_set(err, -EINVAL, "LUKS header hash spec is not NUL terminated");
	if (!memchr(h + H_UUID, 0, LUKS_UUID_LEN))
		return vd_error_set(err, -EINVAL, "LUKS header UUID is not NUL terminated");
	memcpy(s->uuid, h + H_UUID, LUKS_UUID_LEN);
	s->uuid[LUKS_UUID_LEN] = 0;
	s->payload_sector = ld_be32(h + H_PAYLOAD_OFFSET);
	s->mk_iterations = ld_be32(h + H_MK_DIGEST_ITER);
	ret = parse_spec(&s->spec, name, mode, hash, ld_be32(h + H_KEY_BYTES), err);
	if (ret < 0)
		return ret;

	/* QEMU's qcrypto_block_luks_check_header, in its words. */
	for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
		const uint8_t *p = h + H_SLOTS + i * SLOT_SIZE;
		struct luks_slot *sl = &s->slots[i];
		uint64_t start, len;

		sl->active = ld_be32(p + S_ACTIVE);
		sl->iterations = ld_be32(p + S_ITERATIONS);
		memcpy(sl->salt, p + S_SALT, LUKS_SALT_LEN);
		sl->key_offset = ld_be32(p + S_KEY_OFFSET);
		sl->stripes = ld_be32(p + S_STRIPES);
		if (sl->stripes != LUKS_STRIPES)
			return vd_error_set(err, -EINVAL,
					    "Keyslot %d is corrupted (stripes %" PRIu32 " != %d)",
					    i, sl->stripes, LUKS_STRIPES);
		if (sl->active != LUKS_SLOT_DISABLED && sl->active != LUKS_SLOT_ENABLED)
			return vd_error_set(err, -EINVAL,
					    "Keyslot %d state (active/disable) is corrupted", i);
		if (sl->active == LUKS_SLOT_ENABLED && sl->iterations == 0)
			return vd_error_set(err, -EINVAL, "Keyslot %d iteration count is zero", i);
		if (sl->active == LUKS_SLOT_ENABLED && sl->iterations > LUKS_MAX_ITERATIONS)
			return vd_error_set(err, -EINVAL,
					    "Keyslot %d iteration count %" PRIu32
					    " is above the limit of %u",
					    i, sl->iterations, LUKS_MAX_ITERATIONS);
		start = sl->key_offset;
		len = splitkey_sectors(s->spec.key_bytes, sl->stripes);
		if (start < LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR)
			return vd_error_set(err, -EINVAL,
					    "Keyslot %d is overlapping with the LUKS header", i);
		if (start + len > s->payload_sector)
			return vd_error_set(err, -EINVAL,
					    "Keyslot %d is overlapping with the encrypted payload",
					    i);
		for (int j = 0; j < i; j++) {
			uint64_t s2 = s->slots[j].key_offset;

			if (start < s2 + len && s2 < start + len)
				return vd_error_set(
					err, -EINVAL,
					"Keyslots %d and %d are overlapping in the header", j, i);
		}
	}
	if (s->mk_iterations == 0 || s->mk_iterations > LUKS_MAX_ITERATIONS)
		return vd_error_set(err, -EINVAL,
				    "LUKS master key iteration count %" PRIu32
				    " is out of range (1..%u)",
				    s->mk_iterations, LUKS_MAX_ITERATIONS);
	if ((uint64_t)s->payload_sector * LUKS_SECTOR > (uint64_t)file_size)
		return vd_error_set(err, -EINVAL,
				    "LUKS payload offset %" PRIu64 " is beyond the end of the file",
				    (uint64_t)s->payload_sector * LUKS_SECTOR);
	return 0;
}

/* ---- unlocking ---------------------------------------------------------- */

struct unlock_job {
	struct luks_state *s;
	const uint8_t *password;
	size_t password_len;
	uint8_t *material[LUKS_NUM_SLOTS]; /* encrypted key material per active slot */
	uint8_t master[LUKS_MAX_KEY_BYTES];
	int slot; /* the slot that opened, -1 */
	int ret;
};

/* Try one slot: the passphrase's key decrypts the split master key, merge
 * it and compare its digest.  1 on a match, 0 on a mismatch. */
static int try_slot(struct unlock_job *j, int i)
{
	struct luks_state *s = j->s;
	const struct luks_spec *sp = &s->spec;
	size_t split_len = (size_t)sp->key_bytes * LUKS_STRIPES;
	uint8_t slot_key[LUKS_MAX_KEY_BYTES], digest[LUKS_DIGEST_LEN];
	struct luks_crypt c;
	int match;

	sp->hash->pbkdf2(j->password_len, j->password, s->slots[i].iterations, LUKS_SALT_LEN,
			 s->slots[i].salt, sp->key_bytes, slot_key);
	if (crypt_init(&c, sp, slot_key) < 0) {
		vd_memzero_explicit(slot_key, sizeof(slot_key));
		return -ENOMEM;
	}
	crypt_sectors(&c, 0, j->material[i], split_len, false);
	crypt_free(&c);
	vd_memzero_explicit(slot_key, sizeof(slot_key));
	af_merge(sp->hash->nh, sp->key_bytes, LUKS_STRIPES, j->material[i], j->master);
	sp->hash->pbkdf2(sp->key_bytes, j->master, s->mk_iterations, LUKS_SALT_LEN,
			 s->header + H_MK_DIGEST_SALT, LUKS_DIGEST_LEN, digest);
	match = memcmp(digest, s->header + H_MK_DIGEST, LUKS_DIGEST_LEN) == 0;
	vd_memzero_explicit(digest, sizeof(digest));
	return match;
}

static int unlock_worker(void *opaque)
{
	struct unlock_job *j = opaque;

	j->slot = -1;
	for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
		int r;

		if (!j->material[i])
			continue;
		r = try_slot(j, i);
		if (r < 0)
			return r;
		if (r == 1) {
			j->slot = i;
			return 0;
		}
	}
	vd_memzero_explicit(j->master, sizeof(j->master));
	return 0;
}

static int luks_unlock(struct vd_node *n, const char *secret_id, struct vd_error *err)
{
	struct luks_state *s = n->opaque;
	size_t split_len = (size_t)s->spec.key_bytes * LUKS_STRIPES;
	struct unlock_job j = {.s = s, .slot = -1};
	uint8_t *password = NULL;
	int ret;

	ret = vd_secret_lookup(secret_id, &password, &j.password_len, err);
	if (ret < 0)
		return ret;
	j.password = password;
	for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
		struct vd_qiov q;

		if (s->slots[i].active != LUKS_SLOT_ENABLED)
			continue;
		/* Checked at open: at most 64 * 4000 bytes, before the payload. */
		j.material[i] = malloc(split_len);
		if (!j.material[i]) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		vd_qiov_init_buf(&q, j.material[i], split_len);
		ret = vd_co_preadv(n->file, (int64_t)s->slots[i].key_offset * LUKS_SECTOR,
				   (int64_t)split_len, &q, 0);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read key slot %d", i);
			goto out;
		}
	}
	/* PBKDF2 takes as long as the image's creator asked: not on the loop. */
	ret = vd_thread_pool_co(n->loop, unlock_worker, &j);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not unlock the LUKS key slots");
		goto out;
	}
	if (j.slot < 0) {
		ret = vd_error_set(err, -EPERM, "Invalid password, cannot unlock any keyslot");
		goto out;
	}
	ret = crypt_init(&s->crypt, &s->spec, j.master);
	if (ret < 0)
		vd_error_set(err, ret, "Out of memory");
	else
		s->unlocked = true;
out:
	for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
		if (j.material[i]) {
			vd_memzero_explicit(j.material[i], split_len);
			free(j.material[i]);
		}
	}
	vd_memzero_explicit(j.master, sizeof(j.master));
	vd_secret_free(password, j.password_len);
	return ret;
}

/* ---- the node ----------------------------------------------------------- */

static int luks_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct luks_state *s = n->opaque;
	const char *secret = vd_opts_get(opts, "key-secret");
	int64_t file_size;
	struct vd_qiov q;
	int ret;

	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Could not get the image size");
	if (file_size < LUKS_HEADER_SIZE)
		return vd_error_set(err, -EINVAL, "Volume is not in LUKS format");
	vd_qiov_init_buf(&q, s->header, LUKS_HEADER_SIZE);
	ret = vd_co_preadv(n->file, 0, LUKS_HEADER_SIZE, &q, 0);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Unable to read LUKS header");
	ret = parse_header(s, file_size, err);
	if (ret < 0)
		return ret;
	/* As QEMU: an open without I/O (info) reads the header only, also
	 * when a secret is given; any other open needs the secret. */
	if (!(flags & VD_OPEN_NO_IO)) {
		if (!secret)
			return vd_error_set(err, -EINVAL,
					    "Parameter 'key-secret' is required for cipher");
		ret = luks_unlock(n, secret, err);
		if (ret < 0)
			return ret;
	}
	n->size = file_size - (int64_t)s->payload_sector * LUKS_SECTOR;
	return 0;
}

static void luks_close(struct vd_node *n)
{
	struct luks_state *s = n->opaque;

	crypt_free(&s->crypt);
	vd_memzero_explicit(s, sizeof(*s));
}

static void luks_refresh_limits(struct vd_node *n)
{
	/* Whole sectors (the IV unit), aligned as the file needs them; the
	 * guest's buffers are only copied from and to, so any will do. */
	memset(&n->limits, 0, sizeof(n->limits));
	n->limits.request_alignment = n->file->limits.request_alignment > LUKS_SECTOR
					      ? n->file->limits.request_alignment
					      : LUKS_SECTOR;
}

/* A bounce buffer for up to LUKS_MAX_BOUNCE bytes of @bytes. */
static uint8_t *bounce_new(int64_t bytes, size_t *len)
{
	*len = bytes < LUKS_MAX_BOUNCE ? (size_t)bytes : LUKS_MAX_BOUNCE;
	return vd_memalign(4096, *len);
}

static int luks_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct luks_state *s = n->opaque;
	int64_t payload = (int64_t)s->payload_sector * LUKS_SECTOR, done = 0;
	size_t cap;
	uint8_t *buf;
	int ret = 0;

	if (!s->unlocked)
		return -EIO;
	buf = bounce_new(bytes, &cap);
	if (!buf)
		return -ENOMEM;
	while (done < bytes) {
		size_t len = bytes - done < (int64_t)cap ? (size_t)(bytes - done) : cap;
		struct vd_qiov q;

		vd_qiov_init_buf(&q, buf, len);
		ret = vd_co_preadv(n->file, payload + offset + done, (int64_t)len, &q, 0);
		if (ret < 0)
			break;
		crypt_sectors(&s->crypt, (uint64_t)(offset + done) / LUKS_SECTOR, buf, len, false);
		vd_qiov_from_buf(qiov, (size_t)done, buf, len);
		done += (int64_t)len;
	}
	vd_memzero_explicit(buf, cap);
	free(buf);
	return ret;
}

static int luks_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   int flags)
{
	struct luks_state *s = n->opaque;
	int64_t payload = (int64_t)s->payload_sector * LUKS_SECTOR, done = 0;
	size_t cap;
	uint8_t *buf;
	int ret = 0;

	if (!s->unlocked)
		return -EIO;
	buf = bounce_new(bytes, &cap);
	if (!buf)
		return -ENOMEM;
	while (done < bytes) {
		size_t len = bytes - done < (int64_t)cap ? (size_t)(bytes - done) : cap;
		struct vd_qiov q;

		vd_qiov_to_buf(qiov, (size_t)done, buf, len);
		crypt_sectors(&s->crypt, (uint64_t)(offset + done) / LUKS_SECTOR, buf, len, true);
		vd_qiov_init_buf(&q, buf, len);
		ret = vd_co_pwritev(n->file, payload + offset + done, (int64_t)len, &q, 0);
		if (ret < 0)
			break;
		done += (int64_t)len;
	}
	vd_memzero_explicit(buf, cap);
	free(buf);
	return ret;
}

static int luks_co_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
			    struct vd_error *err)
{
	struct luks_state *s = n->opaque;
	int64_t payload = (int64_t)s->payload_sector * LUKS_SECTOR;
	int ret;

	if (size > INT64_MAX - payload)
		return vd_error_set(err, -EFBIG, "The requested size is too large");
	ret = vd_co_truncate(n->file, payload + size, exact, prealloc, err);
	if (ret == 0)
		n->size = size;
	return ret;
}

/* All data, none of it at an offset another tool could read as plain
 * text: qemu-img map shows no "Mapped to" for luks. */
static int luks_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
				int64_t *map, struct vd_node **file)
{
	*pnum = bytes;
	return VD_BLOCK_DATA;
}

static int add_u64(struct vd_opts *o, const char *key, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return vd_opts_set(o, key, buf);
}

/* qemu-img info's "Format specific information" for luks, in its order. */
static int luks_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct luks_state *s = n->opaque;
	const struct luks_spec *sp = &s->spec;
	struct vd_opts *o = vd_opts_new();
	int ret;

	info->encrypted = true;
	if (!o)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vd_opts_set(o, "ivgen-alg", ivgen_names[sp->ivgen]);
	ret = ret ? ret : vd_opts_set(o, "hash-alg", sp->hash->name);
	ret = ret ? ret : vd_opts_set(o, "cipher-alg", sp->cipher->name);
	ret = ret ? ret : vd_opts_set(o, "uuid", s->uuid);
	if (sp->ivgen == IVGEN_ESSIV)
		ret = ret ? ret : vd_opts_set(o, "ivgen-hash-alg", sp->ivgen_hash->name);
	ret = ret ? ret : vd_opts_set(o, "cipher-mode", mode_names[sp->mode]);
	for (int i = 0; i < LUKS_NUM_SLOTS && !ret; i++) {
		const struct luks_slot *sl = &s->slots[i];
		bool active = sl->active == LUKS_SLOT_ENABLED;
		char key[32];

		snprintf(key, sizeof(key), "slots.%d.active", i);
		ret = vd_opts_set(o, key, active ? "true" : "false");
		if (active && !ret) {
			snprintf(key, sizeof(key), "slots.%d.iters", i);
			ret = add_u64(o, key, sl->iterations);
		}
		snprintf(key, sizeof(key), "slots.%d.key-offset", i);
		ret = ret ? ret : add_u64(o, key, (uint64_t)sl->key_offset * LUKS_SECTOR);
		if (active && !ret) {
			snprintf(key, sizeof(key), "slots.%d.stripes", i);
			ret = add_u64(o, key, sl->stripes);
		}
	}
	ret = ret ? ret : add_u64(o, "payload-offset", (uint64_t)s->payload_sector * LUKS_SECTOR);
	ret = ret ? ret : add_u64(o, "master-key-iters", s->mk_iterations);
	if (ret < 0) {
		vd_opts_free(o);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	info->format_specific = o;
	return 0;
}

static int luks_probe(const uint8_t *buf, size_t len, const char *filename)
{
	/* QEMU's qcrypto_block_luks_has_format: the magic and version 1. */
	if (len >= 8 && memcmp(buf, LUKS_MAGIC, LUKS_MAGIC_LEN) == 0 && ld_be16(buf + 6) == 1)
		return 100;
	return 0;
}

/* ---- creation ---------------------------------------------------------- */

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * PBKDF2 iterations per second of @h for an output of @out_len bytes, as
 * QEMU's qcrypto_pbkdf2_count_iters measures it (thread CPU time), but
 * stopping after 50 ms of measurement instead of 500: the figure is an
 * estimate either way and creation should not take seconds before it
 * starts the real work.
 */
static uint64_t pbkdf2_rate(const struct luks_hash_alg *h, size_t out_len)
{
	uint8_t key[8] = "vdisk", salt[LUKS_SALT_LEN] = {0}, out[LUKS_MAX_KEY_BYTES];
	unsigned iters = 1u << 10;

	for (;;) {
		uint64_t t0 = thread_cpu_ns(), dt;

		h->pbkdf2(sizeof(key), key, iters, sizeof(salt), salt, out_len, out);
		dt = thread_cpu_ns() - t0;
		if (dt >= 50000000u || iters >= (1u << 28))
			return dt ? (uint64_t)iters * 1000000000u / dt : (uint64_t)iters * 1000;
		iters *= 4;
	}
}

static int iterations_for(const struct luks_hash_alg *h, size_t out_len, uint64_t iter_time_ms,
			  unsigned divisor, uint32_t *out, struct vd_error *err)
{
	uint64_t rate = pbkdf2_rate(h, out_len), iters;

	if (iter_time_ms && rate > UINT64_MAX / iter_time_ms)
		return vd_error_set(err, -EINVAL, "PBKDF iteration count is too large");
	iters = rate * iter_time_ms / 1000 / divisor;
	/* What open accepts from a header: never write an image we refuse. */
	if (iters > LUKS_MAX_ITERATIONS)
		return vd_error_set(err, -EINVAL,
				    "PBKDF iteration count %" PRIu64
				    " is above the limit of %u: use a smaller iter-time",
				    iters, LUKS_MAX_ITERATIONS);
	*out = iters < LUKS_MIN_ITERATIONS ? LUKS_MIN_ITERATIONS : (uint32_t)iters;
	return 0;
}

static const char *const luks_create_opts[] = {
	"key-secret", "cipher-alg", "cipher-mode",   "ivgen-alg", "ivgen-hash-alg",
	"hash-alg",   "iter-time",  "preallocation", NULL,
};

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t w = pwrite(fd, buf, len, off);

	return w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
}

/* A random RFC 4122 version 4 UUID as text. */
static int make_uuid(char out[LUKS_UUID_LEN])
{
	uint8_t u[16];

	if (gnutls_rnd(GNUTLS_RND_NONCE, u, sizeof(u)) < 0)
		return -EIO;
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
	memset(out, 0, LUKS_UUID_LEN);
	snprintf(out, LUKS_UUID_LEN,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
		 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
		 u[15]);
	return 0;
}

/* The names QEMU 7.2's enums know (QCryptoCipherAlgorithm, ...Mode,
 * QCryptoHashAlgorithm), for its error messages. */
static const char *const qemu_cipher_algs[] = {
	"aes-128",     "aes-192",     "aes-256",     "des",	    "3des",
	"cast5-128",   "serpent-128", "serpent-192", "serpent-256", "twofish-128",
	"twofish-192", "twofish-256", "sm4",	     NULL};
static const char *const qemu_cipher_modes[] = {"ecb", "cbc", "xts", "ctr", NULL};
static const char *const qemu_hash_algs[] = {"md5",    "sha1",	 "sha224",    "sha256",
					     "sha384", "sha512", "ripemd160", NULL};

static bool in_list(const char *const *list, const char *name)
{
	for (; *list; list++)
		if (!strcmp(*list, name))
			return true;
	return false;
}

/* The creation options, QEMU's defaults: aes-256 xts-plain64, sha256. */
static int create_spec(struct vd_opts *opts, struct luks_spec *sp, char *name, char *mode,
		       struct vd_error *err)
{
	const char *alg = vd_opts_get(opts, "cipher-alg");
	const char *cmode = vd_opts_get(opts, "cipher-mode");
	const char *ivgen = vd_opts_get(opts, "ivgen-alg");
	const char *ivhash = vd_opts_get(opts, "ivgen-hash-alg");
	const char *hash = vd_opts_get(opts, "hash-alg");
	const struct luks_cipher_alg *c = NULL;
	int m;

	alg = alg ? alg : "aes-256";
	cmode = cmode ? cmode : "xts";
	ivgen = ivgen ? ivgen : "plain64";
	hash = hash ? hash : "sha256";
	for (size_t i = 0; i < sizeof(cipher_algs) / sizeof(cipher_algs[0]); i++)
		if (!strcmp(cipher_algs[i].name, alg))
			c = &cipher_algs[i];
	/* QEMU's words: a name its enum knows but we cannot use is "not
	 * supported", any other name is refused by the option parser. */
	if (!c)
		return vd_error_set(err, -EINVAL,
				    in_list(qemu_cipher_algs, alg)
					    ? "Algorithm '%s' not supported"
					    : "Parameter 'cipher-alg' does not accept value '%s'",
				    alg);
	for (m = 0; mode_names[m] && strcmp(mode_names[m], cmode); m++)
		;
	if (!mode_names[m])
		return vd_error_set(err, -EINVAL,
				    in_list(qemu_cipher_modes, cmode)
					    ? "Cipher mode '%s' is not supported"
					    : "Parameter 'cipher-mode' does not accept value '%s'",
				    cmode);
	if (!in_list(ivgen_names, ivgen))
		return vd_error_set(err, -EINVAL,
				    "Parameter 'ivgen-alg' does not accept value '%s'", ivgen);
	if (!find_hash(hash))
		return vd_error_set(err, -EINVAL,
				    in_list(qemu_hash_algs, hash)
					    ? "Hash algorithm '%s' not supported"
					    : "Parameter 'hash-alg' does not accept value '%s'",
				    hash);
	if (ivhash && !find_hash(ivhash))
		return vd_error_set(
			err, -EINVAL,
			in_list(qemu_hash_algs, ivhash)
				? "Hash algorithm '%s' not supported"
				: "Parameter 'ivgen-hash-alg' does not accept value '%s'",
			ivhash);
	if (!strcmp(ivgen, "essiv") && !ivhash)
		ivhash = "sha256";
	if (ivhash && strcmp(ivgen, "essiv"))
		ivhash = NULL; /* only essiv has a hash in the mode spec */
	snprintf(name, 32, "%s", c->family);
	if (ivhash)
		snprintf(mode, 32, "%s-%s:%s", cmode, ivgen, ivhash);
	else
		snprintf(mode, 32, "%s-%s", cmode, ivgen);
	return parse_spec(sp, name, mode, hash, m == MODE_XTS ? 2 * c->key_bytes : c->key_bytes,
			  err);
}

static int luks_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	uint8_t h[LUKS_HEADER_SIZE] = {0}, master[LUKS_MAX_KEY_BYTES], slot_key[LUKS_MAX_KEY_BYTES];
	char name[32], mode[32];
	struct luks_spec sp;
	struct luks_crypt c;
	const char *secret_id, *prealloc;
	char sizebuf[32];
	uint8_t *password = NULL, *split = NULL;
	size_t password_len = 0, split_len, split_sectors;
	uint64_t size, iter_time;
	uint32_t mk_iters, slot_iters, payload;
	struct vd_opts *fopts;
	int fd = -1, ret;

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "iter-time", 2000, &iter_time, err);
	if (ret < 0)
		return ret;
	prealloc = vd_opts_get(opts, "preallocation");
	/* QEMU's crypto driver takes metadata as off: the header is all the
	 * metadata there is. */
	if (prealloc && !strcmp(prealloc, "metadata"))
		prealloc = NULL;
	secret_id = vd_opts_get(opts, "key-secret");
	ret = create_spec(opts, &sp, name, mode, err);
	if (ret < 0)
		return ret;
	if (!secret_id)
		return vd_error_set(err, -EINVAL, "Parameter 'key-secret' is required for cipher");
	split_len = (size_t)sp.key_bytes * LUKS_STRIPES;
	if (split_len % LUKS_SECTOR)
		/* QEMU 7.2 aborts here (an assertion); refuse instead. */
		return vd_error_set(err, -ENOTSUP,
				    "%s %s: key material of %zu bytes is not a whole number of "
				    "sectors",
				    sp.cipher->name, mode_names[sp.mode], split_len);
	split_sectors = splitkey_sectors(sp.key_bytes, LUKS_STRIPES);
	payload = (uint32_t)(LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR + LUKS_NUM_SLOTS * split_sectors);
	if (size > (uint64_t)INT64_MAX - (uint64_t)payload * LUKS_SECTOR)
		return vd_error_set(err, -EFBIG, "The image size is too large");
	ret = vd_secret_lookup(secret_id, &password, &password_len, err);
	if (ret < 0)
		return ret;

	/* The header (LUKS1 spec, section 3.1 "initialisation"). */
	memcpy(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN);
	st_be16(h + H_VERSION, LUKS_VERSION);
	memcpy(h + H_CIPHER_NAME, name, strlen(name));
	memcpy(h + H_CIPHER_MODE, mode, strlen(mode));
	memcpy(h + H_HASH_SPEC, sp.hash->name, strlen(sp.hash->name));
	st_be32(h + H_PAYLOAD_OFFSET, payload);
	st_be32(h + H_KEY_BYTES, sp.key_bytes);
	ret = -EIO;
	if (gnutls_rnd(GNUTLS_RND_KEY, master, sp.key_bytes) < 0 ||
	    gnutls_rnd(GNUTLS_RND_RANDOM, h + H_MK_DIGEST_SALT, LUKS_SALT_LEN) < 0 ||
	    make_uuid((char *)h + H_UUID) < 0) {
		vd_error_set(err, ret, "Could not generate random bytes");
		goto out;
	}
	/* QEMU: the digest gets an eighth of iter-time, as cryptsetup. */
	ret = iterations_for(sp.hash, LUKS_DIGEST_LEN, iter_time, 8, &mk_iters, err);
	if (ret < 0)
		goto out;
	st_be32(h + H_MK_DIGEST_ITER, mk_iters);
	sp.hash->pbkdf2(sp.key_bytes, master, mk_iters, LUKS_SALT_LEN, h + H_MK_DIGEST_SALT,
			LUKS_DIGEST_LEN, h + H_MK_DIGEST);
	for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
		uint8_t *p = h + H_SLOTS + i * SLOT_SIZE;

		st_be32(p + S_ACTIVE, LUKS_SLOT_DISABLED);
		st_be32(p + S_KEY_OFFSET,
			(uint32_t)(LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR + i * split_sectors));
		st_be32(p + S_STRIPES, LUKS_STRIPES);
	}

	/* Key slot 0: the master key, split and encrypted with a key
	 * derived from the passphrase. */
	ret = iterations_for(sp.hash, sp.key_bytes, iter_time, 1, &slot_iters, err);
	if (ret < 0)
		goto out;
	split = malloc(split_len);
	if (!split) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	if (gnutls_rnd(GNUTLS_RND_RANDOM, h + H_SLOTS + S_SALT, LUKS_SALT_LEN) < 0 ||
	    af_split(sp.hash->nh, sp.key_bytes, LUKS_STRIPES, master, split) < 0) {
		ret = vd_error_set(err, -EIO, "Could not generate random bytes");
		goto out;
	}
	sp.hash->pbkdf2(password_len, password, slot_iters, LUKS_SALT_LEN, h + H_SLOTS + S_SALT,
			sp.key_bytes, slot_key);
	ret = crypt_init(&c, &sp, slot_key);
	if (ret < 0) {
		vd_error_set(err, ret, "Out of memory");
		goto out;
	}
	crypt_sectors(&c, 0, split, split_len, true);
	crypt_free(&c);
	st_be32(h + H_SLOTS + S_ACTIVE, LUKS_SLOT_ENABLED);
	st_be32(h + H_SLOTS + S_ITERATIONS, slot_iters);

	/* The whole file first (preallocated as asked), then the header and
	 * slot 0's key material over it. */
	snprintf(sizebuf, sizeof(sizebuf), "%" PRIu64, (uint64_t)payload * LUKS_SECTOR + size);
	fopts = vd_opts_new();
	if (!fopts || vd_opts_set(fopts, "size", sizebuf) < 0 ||
	    (prealloc && vd_opts_set(fopts, "preallocation", prealloc) < 0)) {
		vd_opts_free(fopts);
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	ret = vd_driver_file.create(filename, fopts, err);
	vd_opts_free(fopts);
	if (ret < 0)
		goto out;
	fd = open(filename, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not open '%s'", filename);
		goto out;
	}
	ret = pwrite_all(fd, split, split_len, (off_t)LUKS_KEY_SLOT_OFFSET);
	if (ret == 0)
		ret = pwrite_all(fd, h, sizeof(h), 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret < 0)
		vd_error_setg_errno(err, ret, "Error writing LUKS image '%s'", filename);
out:
	if (fd >= 0)
		close(fd);
	if (split) {
		vd_memzero_explicit(split, split_len);
		free(split);
	}
	vd_memzero_explicit(master, sizeof(master));
	vd_memzero_explicit(slot_key, sizeof(slot_key));
	vd_secret_free(password, password_len);
	return ret;
}

const struct vd_block_driver vd_driver_luks = {
	.name = "luks",
	.instance_size = sizeof(struct luks_state),
	.is_format = true,
	.child_name = "file",
	.child_has_metadata = true,
	.create_opts = luks_create_opts,
	.probe = luks_probe,
	.open = luks_open,
	.close = luks_close,
	.create = luks_create,
	.co_preadv = luks_co_preadv,
	.co_pwritev = luks_co_pwritev,
	.co_truncate = luks_co_truncate,
	.co_block_status = luks_co_block_status,
	.get_info = luks_get_info,
	.refresh_limits = luks_refresh_limits,
};
