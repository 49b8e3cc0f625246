/* A native app side for one benchmark line (bench/bench_impl.py, section 3): what the cross-process handoff
 * would cost if the child's framing and import were native code, behind the boundary's real Python parent.
 *
 * It speaks keyhandoff.impl.boundary's protocol on stdin/stdout (4-byte big-endian length, then a marshal
 * payload) for two requests:
 *   ("setup", (key,), {})             key: 32 bytes, the AES-256-GCM key of the benchmark's own blobs
 *   ("import_key", (prov, blob), {})  blob: 8-byte header, 12-byte nonce, ciphertext and 16-byte tag, the
 *                                     header as associated data (the layout of an OPAQUEKEYBLOB)
 * and answers ("ok", n) with a counter, or ("err", NTE_BAD_DATA, "import_key") when the blob does not open.
 * It opens the blob and does nothing else: no payload checks, no key record, no handle table. That makes its
 * figure a lower bound for a native import, not an implementation of one.
 *
 * Build: cc -O2 -o native_import native_import.c -lcrypto   (OpenSSL headers: Debian package libssl-dev)
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define MAX_FRAME (1u << 20)
#define HEADER 8
#define NONCE 12
#define TAG 16
#define NTE_BAD_DATA 0x80090005u

typedef struct {
    const unsigned char *p, *end;
} cursor;

static int read_all(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

static int write_all(int fd, const unsigned char *buf, size_t n) {
    while (n) {
        ssize_t r = write(fd, buf, n);
        if (r <= 0) return 0;
        buf += r;
        n -= (size_t)r;
    }
    return 1;
}

static int take(cursor *c, size_t n, const unsigned char **out) {
    if ((size_t)(c->end - c->p) < n) return 0;
    *out = c->p;
    c->p += n;
    return 1;
}

static uint32_t le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* One marshal value: its type code (FLAG_REF cleared), and for str/bytes its data and length, for a tuple its
 * item count (the items follow). Integers, None, True, False and empty dicts are skipped over. 0 on anything
 * else (references, floats, code objects, a non-empty dict): the request is refused. */
static int value(cursor *c, int *type, const unsigned char **data, uint32_t *len) {
    const unsigned char *b;
    if (!take(c, 1, &b)) return 0;
    *type = b[0] & 0x7f;
    *data = NULL;
    *len = 0;
    switch (*type) {
    case 'N': case 'T': case 'F': return 1;
    case 'i': return take(c, 4, &b);
    case 'l': {
        if (!take(c, 4, &b)) return 0;
        int32_t digits = (int32_t)le32(b);
        uint32_t n = digits < 0 ? (uint32_t)(-(int64_t)digits) : (uint32_t)digits;
        return n <= 64 && take(c, 2 * (size_t)n, &b);
    }
    case 'z': case 'Z': case ')':
        if (!take(c, 1, &b)) return 0;
        *len = b[0];
        return *type == ')' || take(c, *len, data);
    case 'a': case 'A': case 'u': case 's': case '(':
        if (!take(c, 4, &b)) return 0;
        *len = le32(b);
        return *type == '(' || take(c, *len, data);
    case '{': return take(c, 1, &b) && b[0] == '0';
    default: return 0;
    }
}

static int is_str(int type) { return type == 'z' || type == 'Z' || type == 'a' || type == 'A' || type == 'u'; }

/* The method name and the request's bytes argument: ("name", (..., bytes), {}) with the bytes last. */
static int request(cursor *c, const unsigned char **name, uint32_t *name_len, const unsigned char **arg,
                   uint32_t *arg_len) {
    int type;
    uint32_t n, args;
    const unsigned char *data;
    if (!value(c, &type, &data, &n) || (type != ')' && type != '(') || n != 3) return 0;
    if (!value(c, &type, name, name_len) || !is_str(type)) return 0;
    if (!value(c, &type, &data, &args) || (type != ')' && type != '(') || args < 1) return 0;
    for (uint32_t i = 0; i < args; i++)
        if (!value(c, &type, arg, arg_len)) return 0;
    if (type != 's') return 0;
    return value(c, &type, &data, &n) && type == '{' && c->p == c->end;
}

static int reply(const unsigned char *payload, size_t n) {
    unsigned char frame[64];
    frame[0] = (unsigned char)(n >> 24);
    frame[1] = (unsigned char)(n >> 16);
    frame[2] = (unsigned char)(n >> 8);
    frame[3] = (unsigned char)n;
    memcpy(frame + 4, payload, n);
    return write_all(1, frame, 4 + n);
}

static int reply_ok(uint32_t counter) {
    unsigned char p[] = {')', 2, 'Z', 2, 'o', 'k', 'i', 0, 0, 0, 0};
    memcpy(p + 7, &counter, 4); /* marshal integers are little-endian, as is this machine */
    return reply(p, sizeof p);
}

static int reply_err(void) {
    /* The code is above 2**31, so marshal holds it as a long: 3 digits of 15 bits, least significant first. */
    unsigned char p[] = {')', 3, 'Z', 3, 'e', 'r', 'r', 'l', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'Z', 10,
                         'i', 'm', 'p', 'o', 'r', 't', '_', 'k', 'e', 'y'};
    for (int i = 0; i < 3; i++) {
        uint32_t digit = (NTE_BAD_DATA >> (15 * i)) & 0x7fff;
        p[12 + 2 * i] = (unsigned char)digit;
        p[13 + 2 * i] = (unsigned char)(digit >> 8);
    }
    return reply(p, sizeof p);
}

static int aead_open(EVP_CIPHER_CTX *ctx, const unsigned char *key, const unsigned char *blob, uint32_t n,
                     unsigned char *out) {
    int len = 0;
    if (n <= HEADER + NONCE + TAG) return 0;
    return EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) > 0 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) > 0 &&
           EVP_DecryptInit_ex(ctx, NULL, NULL, key, blob + HEADER) > 0 &&
           EVP_DecryptUpdate(ctx, NULL, &len, blob, HEADER) > 0 &&
           EVP_DecryptUpdate(ctx, out, &len, blob + HEADER + NONCE, (int)(n - HEADER - NONCE - TAG)) > 0 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG, (void *)(blob + n - TAG)) > 0 &&
           EVP_DecryptFinal_ex(ctx, out + len, &len) > 0;
}

int main(void) {
    static unsigned char frame[MAX_FRAME], plain[MAX_FRAME];
    unsigned char key[32], length[4];
    int keyed = 0;
    uint32_t counter = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) return 1;
    while (read_all(0, length, 4)) {
        uint32_t n = (uint32_t)length[0] << 24 | (uint32_t)length[1] << 16 | (uint32_t)length[2] << 8 | length[3];
        if (n > MAX_FRAME || !read_all(0, frame, n)) return 1;
        cursor c = {frame, frame + n};
        const unsigned char *name, *arg;
        uint32_t name_len, arg_len;
        int ok;
        if (!request(&c, &name, &name_len, &arg, &arg_len)) return 1;
        if (name_len == 5 && memcmp(name, "setup", 5) == 0 && arg_len == sizeof key) {
            memcpy(key, arg, sizeof key);
            keyed = 1;
            ok = reply_ok(0);
        } else if (keyed && name_len == 10 && memcmp(name, "import_key", 10) == 0) {
            ok = aead_open(ctx, key, arg, arg_len, plain) ? reply_ok(++counter) : reply_err();
        } else {
            return 1;
        }
        if (!ok) return 1;
    }
    EVP_CIPHER_CTX_free(ctx);
    return 0;
}
