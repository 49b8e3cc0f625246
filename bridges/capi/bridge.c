/*
 * keyhandoff CAPI bridge: CryptoAPI (advapi32) behind the keyhandoff line protocol on stdin/stdout.
 *
 * One request per line, one reply per line (docs/targets.md is the protocol's reference):
 *   request:  <verb> <field> ...      integers in decimal or 0x-hex, byte strings in hex ("-" when empty)
 *   reply:    ok [<field> ...]        or   err 0x<GetLastError code, 8 hex digits>
 * The bridge keeps no key state of its own: every handle is the provider's own HCRYPTKEY / HCRYPTPROV, passed
 * through unchanged, so what the CSP does with handles (reuse after destroy, say) is what a test sees.
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -Wall -o bridge.exe bridge.c -ladvapi32
 * Run:   bridge.exe [--provider NAME] [--type N]    (under Wine: wine bridge.exe ...)
 *
 * I/O goes through ReadFile/WriteFile on the standard handles, not the C runtime: no text-mode translation,
 * no stdio buffering to flush, and no sscanf (slow under Wine).
 */
#include <windows.h>
#include <wincrypt.h>

#define PROTOCOL_VERSION "1"
#define MAX_LINE (1u << 22)         /* 4 MiB of request: 2 MiB of data in hex */
#define MAX_KEYS 4096               /* key -> provider pairs, for HMAC (CryptCreateHash needs the provider) */

static HANDLE in_handle, out_handle;
static char *in_buf;                /* bytes read but not yet consumed */
static DWORD in_len, in_pos;
static char *out_buf;
static DWORD out_len, out_cap;
static BYTE *data_buf;              /* decoded bytes of the request, with room for padding */
static DWORD data_cap;

static struct { HCRYPTKEY key; HCRYPTPROV prov; } owners[MAX_KEYS];
static HCRYPTPROV last_prov;        /* the provider of a key we never saw made (a stale or foreign handle) */

static const char *provider_name = MS_ENH_RSA_AES_PROV_A;
static DWORD provider_type = PROV_RSA_AES;

/* --- output ------------------------------------------------------------------------------------------- */
static void out_reserve(DWORD more) {
    if (out_len + more <= out_cap) return;
    while (out_len + more > out_cap) out_cap = out_cap ? out_cap * 2 : 1u << 16;
    out_buf = HeapReAlloc(GetProcessHeap(), 0, out_buf, out_cap);
    if (!out_buf) ExitProcess(3);
}

static void out_str(const char *s) {
    DWORD n = lstrlenA(s);
    out_reserve(n);
    CopyMemory(out_buf + out_len, s, n);
    out_len += n;
}

static void out_uint(ULONGLONG v) {
    char digits[24];
    int i = 0;
    do { digits[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    out_reserve(i + 1);
    out_buf[out_len++] = ' ';
    while (i) out_buf[out_len++] = digits[--i];
}

static void out_hex(const BYTE *p, DWORD n) {
    static const char hexdigits[] = "0123456789abcdef";
    out_reserve(2 * n + 2);
    out_buf[out_len++] = ' ';
    if (!n) { out_buf[out_len++] = '-'; return; }
    for (DWORD i = 0; i < n; i++) {
        out_buf[out_len++] = hexdigits[p[i] >> 4];
        out_buf[out_len++] = hexdigits[p[i] & 15];
    }
}

static void reply_error(DWORD code) {
    static const char hexdigits[] = "0123456789abcdef";
    char text[16] = "err 0x";
    for (int i = 0; i < 8; i++) text[6 + i] = hexdigits[(code >> (28 - 4 * i)) & 15];
    text[14] = 0;
    out_len = 0;
    out_str(text);
}

/* A failed call: the provider's own code; a call that failed without setting one still must not read as ok. */
static void reply_last_error(void) {
    DWORD code = GetLastError();
    reply_error(code ? code : ERROR_GEN_FAILURE);
}

static void flush_reply(void) {
    out_reserve(1);
    out_buf[out_len++] = '\n';
    DWORD done = 0, wrote;
    while (done < out_len) {
        if (!WriteFile(out_handle, out_buf + done, out_len - done, &wrote, NULL)) ExitProcess(4);
        done += wrote;
    }
    out_len = 0;
}

/* --- input -------------------------------------------------------------------------------------------- */
/* The next line without its terminator (NUL-terminated in place), or NULL at end of input. */
static char *read_line(void) {
    for (;;) {
        for (DWORD i = in_pos; i < in_len; i++) {
            if (in_buf[i] == '\n') {
                char *line = in_buf + in_pos;
                in_buf[i] = 0;
                if (i > in_pos && in_buf[i - 1] == '\r') in_buf[i - 1] = 0;
                in_pos = i + 1;
                return line;
            }
        }
        if (in_pos > 0) {  /* keep the partial line at the start of the buffer */
            MoveMemory(in_buf, in_buf + in_pos, in_len - in_pos);
            in_len -= in_pos;
            in_pos = 0;
        }
        if (in_len >= MAX_LINE) { in_len = 0; return ""; }  /* an overlong line: answered as malformed */
        DWORD got = 0;
        if (!ReadFile(in_handle, in_buf + in_len, MAX_LINE - in_len, &got, NULL) || got == 0) return NULL;
        in_len += got;
    }
}

static char *next_field(char **cursor) {
    char *p = *cursor;
    while (*p == ' ') p++;
    if (!*p) return NULL;
    char *start = p;
    while (*p && *p != ' ') p++;
    if (*p) *p++ = 0;
    *cursor = p;
    return start;
}

static BOOL parse_uint(const char *s, ULONGLONG *value) {
    ULONGLONG v = 0;
    if (!s || !*s) return FALSE;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        if (!*s) return FALSE;
        for (; *s; s++) {
            int d = (*s >= '0' && *s <= '9') ? *s - '0' : (*s >= 'a' && *s <= 'f') ? *s - 'a' + 10
                  : (*s >= 'A' && *s <= 'F') ? *s - 'A' + 10 : -1;
            if (d < 0 || v >> 60) return FALSE;
            v = v * 16 + d;
        }
    } else {
        for (; *s; s++) {
            if (*s < '0' || *s > '9' || v > 1844674407370955161ULL) return FALSE;
            v = v * 10 + (*s - '0');
        }
    }
    *value = v;
    return TRUE;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode hex into data_buf, leaving `spare` bytes of room after it (CryptEncrypt pads in place). */
static BOOL parse_hex(const char *s, DWORD spare, DWORD *n) {
    if (!s) return FALSE;
    DWORD len = 0;
    if (!(s[0] == '-' && s[1] == 0)) {
        len = lstrlenA(s);
        if (len % 2) return FALSE;
        len /= 2;
    }
    if (len + spare > data_cap) {
        data_cap = len + spare;
        data_buf = HeapReAlloc(GetProcessHeap(), 0, data_buf, data_cap);
        if (!data_buf) ExitProcess(3);
    }
    for (DWORD i = 0; i < len; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return FALSE;
        data_buf[i] = (BYTE)(hi << 4 | lo);
    }
    *n = len;
    return TRUE;
}

/* --- bookkeeping for HMAC ----------------------------------------------------------------------------- */
static void remember(HCRYPTKEY key, HCRYPTPROV prov) {
    int free_slot = -1;
    for (int i = 0; i < MAX_KEYS; i++) {
        if (owners[i].key == key) { owners[i].prov = prov; return; }  /* a reused handle: its new owner */
        if (!owners[i].key && free_slot < 0) free_slot = i;
    }
    if (free_slot >= 0) { owners[free_slot].key = key; owners[free_slot].prov = prov; }
}

static void forget(HCRYPTKEY key) {
    for (int i = 0; i < MAX_KEYS; i++) if (owners[i].key == key) owners[i].key = 0;
}

static HCRYPTPROV owner_of(HCRYPTKEY key) {
    for (int i = 0; i < MAX_KEYS; i++) if (owners[i].key == key) return owners[i].prov;
    return last_prov;
}

/* The parameters CryptGetKeyParam answers with a byte string; every other one is a DWORD. */
static BOOL bytes_param(DWORD param) { return param == KP_IV || param == KP_SALT || param == KP_SALT_EX; }

/* --- verbs -------------------------------------------------------------------------------------------- */
#define FIELD_UINT(name) ULONGLONG name; if (!parse_uint(next_field(&args), &name)) goto malformed
#define END_OF_FIELDS() if (next_field(&args)) goto malformed

static void handle(char *line) {
    char *args = line;
    char *verb = next_field(&args);
    out_len = 0;
    out_str("ok");
    if (!verb) goto malformed;

    if (!lstrcmpA(verb, "hello")) {
        END_OF_FIELDS();
        /* Under Wine, ntdll exports wine_get_version: the report names the platform it really ran on. */
        typedef const char *(CDECL *version_fn)(void);
        version_fn wine_version = (version_fn)(void *)GetProcAddress(GetModuleHandleA("ntdll.dll"),
                                                                     "wine_get_version");
        out_str(" " PROTOCOL_VERSION " ");
        if (wine_version) {
            out_str("wine-");
            out_str(wine_version());
        } else {
            OSVERSIONINFOA info;
            ZeroMemory(&info, sizeof info);
            info.dwOSVersionInfoSize = sizeof info;
            out_str("windows");
            if (GetVersionExA(&info)) { out_uint(info.dwMajorVersion); out_uint(info.dwMinorVersion); }
        }
        out_str(" ");
        out_str(provider_name);
        out_str(", type");
        out_uint(provider_type);
        return;
    }
    if (!lstrcmpA(verb, "acquire")) {  /* acquire <side>: one process here, so both sides are alike */
        if (!next_field(&args)) goto malformed;
        END_OF_FIELDS();
        HCRYPTPROV prov;
        if (!CryptAcquireContextA(&prov, NULL, provider_name, provider_type, CRYPT_VERIFYCONTEXT)) goto failed;
        last_prov = prov;
        out_uint(prov);
        return;
    }
    if (!lstrcmpA(verb, "release")) {
        FIELD_UINT(prov);
        END_OF_FIELDS();
        if (!CryptReleaseContext((HCRYPTPROV)prov, 0)) goto failed;
        return;
    }
    if (!lstrcmpA(verb, "genkey")) {  /* genkey <prov> <alg> <flags> <hardware 0|1> */
        FIELD_UINT(prov);
        FIELD_UINT(alg);
        FIELD_UINT(flags);
        FIELD_UINT(hardware);
        END_OF_FIELDS();
        if (hardware) { reply_error(NTE_BAD_FLAGS); return; }  /* CryptoAPI has no way to ask for hardware */
        HCRYPTKEY key;
        if (!CryptGenKey((HCRYPTPROV)prov, (ALG_ID)alg, (DWORD)flags, &key)) goto failed;
        remember(key, (HCRYPTPROV)prov);
        out_uint(key);
        return;
    }
    if (!lstrcmpA(verb, "import")) {  /* import <prov> <pubkey> <flags> <hardware 0|1> <blob> */
        FIELD_UINT(prov);
        FIELD_UINT(pub_key);
        FIELD_UINT(flags);
        FIELD_UINT(hardware);
        DWORD n;
        if (!parse_hex(next_field(&args), 0, &n)) goto malformed;
        END_OF_FIELDS();
        if (hardware) { reply_error(NTE_BAD_FLAGS); return; }
        HCRYPTKEY key;
        if (!CryptImportKey((HCRYPTPROV)prov, data_buf, n, (HCRYPTKEY)pub_key, (DWORD)flags, &key)) goto failed;
        remember(key, (HCRYPTPROV)prov);
        out_uint(key);
        return;
    }
    if (!lstrcmpA(verb, "export")) {  /* export <key> <expkey> <type> <flags> */
        FIELD_UINT(key);
        FIELD_UINT(exp_key);
        FIELD_UINT(type);
        FIELD_UINT(flags);
        END_OF_FIELDS();
        DWORD size = 0;
        if (!CryptExportKey((HCRYPTKEY)key, (HCRYPTKEY)exp_key, (DWORD)type, (DWORD)flags, NULL, &size))
            goto failed;
        BYTE *blob = HeapAlloc(GetProcessHeap(), 0, size ? size : 1);
        if (!blob) ExitProcess(3);
        BOOL done = CryptExportKey((HCRYPTKEY)key, (HCRYPTKEY)exp_key, (DWORD)type, (DWORD)flags, blob, &size);
        DWORD code = GetLastError();
        if (done) out_hex(blob, size);
        SecureZeroMemory(blob, size);  /* a plaintext blob holds key bytes */
        HeapFree(GetProcessHeap(), 0, blob);
        if (!done) { SetLastError(code); goto failed; }
        return;
    }
    if (!lstrcmpA(verb, "destroy")) {
        FIELD_UINT(key);
        END_OF_FIELDS();
        if (!CryptDestroyKey((HCRYPTKEY)key)) goto failed;
        forget((HCRYPTKEY)key);
        return;
    }
    if (!lstrcmpA(verb, "dup")) {
        FIELD_UINT(key);
        END_OF_FIELDS();
        HCRYPTKEY copy;
        if (!CryptDuplicateKey((HCRYPTKEY)key, NULL, 0, &copy)) goto failed;
        remember(copy, owner_of((HCRYPTKEY)key));
        out_uint(copy);
        return;
    }
    if (!lstrcmpA(verb, "setparam")) {  /* setparam <key> <param> i <dword> | setparam <key> <param> b <hex> */
        FIELD_UINT(key);
        FIELD_UINT(param);
        char *kind = next_field(&args);
        if (!kind) goto malformed;
        if (!lstrcmpA(kind, "i")) {
            FIELD_UINT(value);
            END_OF_FIELDS();
            if (value > 0xFFFFFFFFULL) { reply_error(ERROR_INVALID_PARAMETER); return; }
            DWORD dword = (DWORD)value;
            if (!CryptSetKeyParam((HCRYPTKEY)key, (DWORD)param, (BYTE *)&dword, 0)) goto failed;
            return;
        }
        if (lstrcmpA(kind, "b")) goto malformed;
        DWORD n;
        if (!parse_hex(next_field(&args), 64, &n)) goto malformed;
        END_OF_FIELDS();
        ZeroMemory(data_buf + n, 64);  /* the C API reads a length it decides: never past our buffer */
        if (param == KP_SALT_EX) {
            CRYPT_DATA_BLOB salt = {n, data_buf};
            if (!CryptSetKeyParam((HCRYPTKEY)key, KP_SALT_EX, (BYTE *)&salt, 0)) goto failed;
            return;
        }
        if (param == KP_SALT && n != 11) {
            /* The Microsoft providers read exactly 11 bytes of KP_SALT: another length cannot be passed
               through the C API, so it is refused as the Target protocol says, for the keys that take a salt
               (the others go to the CSP, which refuses the parameter itself). */
            ALG_ID alg = 0;
            DWORD size = sizeof alg;
            if (!CryptGetKeyParam((HCRYPTKEY)key, KP_ALGID, (BYTE *)&alg, &size, 0)) goto failed;
            if (alg == CALG_RC2 || alg == CALG_RC4) { reply_error(ERROR_INVALID_PARAMETER); return; }
        }
        if (param == KP_IV) {
            /* CryptSetKeyParam reads exactly one block of IV; a value of another length cannot be passed
               through the C API, so it is refused as the Target protocol says (ERROR_INVALID_PARAMETER). */
            DWORD bits = 0, size = sizeof bits;
            if (!CryptGetKeyParam((HCRYPTKEY)key, KP_BLOCKLEN, (BYTE *)&bits, &size, 0)) goto failed;
            if (n != bits / 8) { reply_error(ERROR_INVALID_PARAMETER); return; }
        }
        if (!CryptSetKeyParam((HCRYPTKEY)key, (DWORD)param, data_buf, 0)) goto failed;
        return;
    }
    if (!lstrcmpA(verb, "getparam")) {  /* getparam <key> <param> -> ok i <dword> | ok b <hex> */
        FIELD_UINT(key);
        FIELD_UINT(param);
        END_OF_FIELDS();
        BYTE value[256];
        DWORD size = sizeof value;
        if (!CryptGetKeyParam((HCRYPTKEY)key, (DWORD)param, value, &size, 0)) goto failed;
        if (bytes_param((DWORD)param) || size != sizeof(DWORD)) {
            out_str(" b");
            out_hex(value, size);
        } else {
            DWORD dword;
            CopyMemory(&dword, value, sizeof dword);
            out_str(" i");
            out_uint(dword);
        }
        return;
    }
    if (!lstrcmpA(verb, "encrypt") || !lstrcmpA(verb, "decrypt")) {  /* encrypt <key> <final 0|1> <hex> */
        BOOL encrypt = verb[0] == 'e';
        FIELD_UINT(key);
        FIELD_UINT(final);
        DWORD n;
        if (!parse_hex(next_field(&args), 64, &n)) goto malformed;  /* room for a padding block */
        END_OF_FIELDS();
        if (final > 1) goto malformed;
        DWORD len = n;
        BOOL done = encrypt ? CryptEncrypt((HCRYPTKEY)key, 0, (BOOL)final, 0, data_buf, &len, n + 64)
                            : CryptDecrypt((HCRYPTKEY)key, 0, (BOOL)final, 0, data_buf, &len);
        if (!done) goto failed;
        out_hex(data_buf, len);
        return;
    }
    if (!lstrcmpA(verb, "hmac")) {  /* hmac <key> <hash alg> <hex> */
        FIELD_UINT(key);
        FIELD_UINT(hash_alg);
        DWORD n;
        if (!parse_hex(next_field(&args), 0, &n)) goto malformed;
        END_OF_FIELDS();
        HCRYPTHASH hash;
        if (!CryptCreateHash(owner_of((HCRYPTKEY)key), CALG_HMAC, (HCRYPTKEY)key, 0, &hash)) goto failed;
        HMAC_INFO info = {0};
        info.HashAlgid = (ALG_ID)hash_alg;
        BYTE value[64];
        DWORD size = sizeof value;
        BOOL done = CryptSetHashParam(hash, HP_HMAC_INFO, (BYTE *)&info, 0) && CryptHashData(hash, data_buf, n, 0)
                    && CryptGetHashParam(hash, HP_HASHVAL, value, &size, 0);
        DWORD code = GetLastError();
        CryptDestroyHash(hash);
        if (!done) { SetLastError(code); goto failed; }
        out_hex(value, size);
        return;
    }
    if (!lstrcmpA(verb, "quit")) {
        END_OF_FIELDS();
        flush_reply();
        ExitProcess(0);
    }
malformed:
    /* Not a request of this protocol: never reaches the CSP. */
    reply_error(ERROR_BAD_FORMAT);
    return;
failed:
    reply_last_error();
}

/* A fault inside the CSP: answer the request with "crash <exception code>" and exit (the state of a process
   after an access violation is not worth going on with), instead of a debugger's text on stdout. */
static LONG WINAPI on_crash(EXCEPTION_POINTERS *info) {
    static const char hexdigits[] = "0123456789abcdef";
    DWORD code = info->ExceptionRecord->ExceptionCode;
    char text[24] = "crash 0x";
    for (int i = 0; i < 8; i++) text[8 + i] = hexdigits[(code >> (28 - 4 * i)) & 15];
    text[16] = '\n';
    DWORD wrote;
    WriteFile(out_handle, text, 17, &wrote, NULL);
    ExitProcess(5);
    return EXCEPTION_EXECUTE_HANDLER;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!lstrcmpA(argv[i], "--provider") && i + 1 < argc) provider_name = argv[++i];
        else if (!lstrcmpA(argv[i], "--type") && i + 1 < argc) {
            ULONGLONG type;
            if (!parse_uint(argv[++i], &type)) return 2;
            provider_type = (DWORD)type;
        } else return 2;
    }
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
    SetUnhandledExceptionFilter(on_crash);
    in_handle = GetStdHandle(STD_INPUT_HANDLE);
    out_handle = GetStdHandle(STD_OUTPUT_HANDLE);
    in_buf = HeapAlloc(GetProcessHeap(), 0, MAX_LINE);
    out_buf = HeapAlloc(GetProcessHeap(), 0, out_cap = 1u << 16);
    data_buf = HeapAlloc(GetProcessHeap(), 0, data_cap = 1u << 16);
    if (!in_buf || !out_buf || !data_buf) return 3;
    char *line;
    while ((line = read_line()) != NULL) {
        handle(line);
        flush_reply();
    }
    return 0;  /* end of input: a clean exit */
}
