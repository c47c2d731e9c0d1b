/* Byte scans of the HTTP parser, 16 bytes at a time where the CPU has SSE2
 * (every x86-64 does), a byte at a time elsewhere.
 *
 * Each scan reads p[i .. i+16) only while i + 16 <= limit, where limit is the
 * end of the bytes object being parsed: never past the object. Callers pass
 * the end of the whole received buffer as limit and rely on a terminator
 * (the CR of the head's final CRLF CRLF) to stop earlier.
 */
#ifndef TW_HTTP_SCAN_H
#define TW_HTTP_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define TW_HAVE_SSE2 1
#else
#define TW_HAVE_SSE2 0
#endif

/* RFC 9110 5.5: a field value may hold no control character but HTAB, and no
 * DEL. Returns the index of the first such byte at or after i (CR included,
 * which is how a value ends), or limit. ORs every byte examined into *high, so
 * that (*high & 0x80) tells whether a non-ASCII byte was seen. */
static inline ptrdiff_t tw_find_ctl(const char *p, ptrdiff_t i, ptrdiff_t limit,
                                    unsigned int *high)
{
#if TW_HAVE_SSE2
    const __m128i c1f = _mm_set1_epi8(0x1f);
    const __m128i tab = _mm_set1_epi8(0x09);
    const __m128i del = _mm_set1_epi8(0x7f);
    __m128i seen = _mm_setzero_si128();
    while (i + 16 <= limit) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        /* v <= 0x1f (unsigned), but not HTAB; or v == DEL */
        __m128i low = _mm_cmpeq_epi8(_mm_max_epu8(v, c1f), c1f);
        __m128i ctl = _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(v, tab), low),
                                   _mm_cmpeq_epi8(v, del));
        int m = _mm_movemask_epi8(ctl);
        if (m) {
            int k = __builtin_ctz((unsigned int)m);
            /* only the bytes before the hit belong to the value */
            unsigned int before = (unsigned int)_mm_movemask_epi8(v) & ((1u << k) - 1u);
            *high |= before ? 0x80u : 0u;
            *high |= (unsigned int)_mm_movemask_epi8(seen) ? 0x80u : 0u;
            return i + k;
        }
        seen = _mm_or_si128(seen, v);
        i += 16;
    }
    *high |= (unsigned int)_mm_movemask_epi8(seen) ? 0x80u : 0u;
#endif
    while (i < limit) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != 0x09) || c == 0x7f)
            return i;
        *high |= c;
        i++;
    }
    return limit;
}

/* A header name: copies the upper-case form (a-z to A-Z, every other byte as
 * it is) of p[a ..] into out until the first colon, which must come within
 * max bytes. Returns the name's length (the colon's offset from a), or -1
 * when no colon comes within max bytes or before limit. Nothing is
 * validated: a caller that finds the result among names made of token
 * characters knows the name was made of them too. out has room for max + 16
 * bytes. */
static inline ptrdiff_t tw_upper_name(const char *p, ptrdiff_t a, ptrdiff_t limit,
                                      char *out, ptrdiff_t max)
{
    ptrdiff_t n = 0;
#if TW_HAVE_SSE2
    const __m128i colon = _mm_set1_epi8(':');
    /* a-z: bytes in [0x61, 0x7a]; shifted by 0x80 - 0x61 they become the
     * lowest 26 values of a signed byte */
    const __m128i shift = _mm_set1_epi8((char)(0x80 - 0x61));
    const __m128i top = _mm_set1_epi8((char)(-0x80 + 25));
    const __m128i bit = _mm_set1_epi8(0x20);
    while (n < max && a + n + 16 <= limit) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + a + n));
        /* the bytes that are not lower-case letters */
        __m128i other = _mm_cmpgt_epi8(_mm_add_epi8(v, shift), top);
        __m128i up = _mm_xor_si128(v, _mm_andnot_si128(other, bit));
        _mm_storeu_si128((__m128i *)(out + n), up);
        int m = _mm_movemask_epi8(_mm_cmpeq_epi8(v, colon));
        if (m) {
            n += __builtin_ctz((unsigned int)m);
            return n <= max ? n : -1;
        }
        n += 16;
    }
#endif
    while (n < max && a + n < limit) {
        unsigned char c = (unsigned char)p[a + n];
        if (c == ':')
            return n;
        out[n] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : (char)c;
        n++;
    }
    return -1;
}

/* The end of a head: the index of the CR of the first CR LF CR LF at or
 * after i, or -1 when there is none before limit. */
static inline ptrdiff_t tw_find_head_end(const char *p, ptrdiff_t i, ptrdiff_t limit)
{
#if TW_HAVE_SSE2
    const __m128i cr = _mm_set1_epi8('\r');
    /* a CR with another CR two bytes on is where CR LF CR LF can start; a
     * hit in the last lane looks at p[i + 18]. Two blocks at a time while
     * neither has one (header lines are longer than 16 bytes) */
    while (i + 35 <= limit) {
        __m128i a0 = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b0 = _mm_loadu_si128((const __m128i *)(p + i + 2));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(p + i + 16));
        __m128i b1 = _mm_loadu_si128((const __m128i *)(p + i + 18));
        __m128i h0 = _mm_and_si128(_mm_cmpeq_epi8(a0, cr), _mm_cmpeq_epi8(b0, cr));
        __m128i h1 = _mm_and_si128(_mm_cmpeq_epi8(a1, cr), _mm_cmpeq_epi8(b1, cr));
        if (_mm_movemask_epi8(_mm_or_si128(h0, h1)))
            break;      /* looked at one block at a time below */
        i += 32;
    }
    while (i + 19 <= limit) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 2));
        unsigned int m = (unsigned int)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, cr), _mm_cmpeq_epi8(b, cr)));
        while (m) {
            int k = __builtin_ctz(m);
            if (p[i + k + 1] == '\n' && p[i + k + 3] == '\n')
                return i + k;
            m &= m - 1;
        }
        i += 16;
    }
#endif
    while (i + 4 <= limit) {
        const char *hit = (const char *)memchr(p + i, '\r', (size_t)(limit - i));
        if (hit == NULL)
            return -1;
        i = hit - p;
        if (i + 4 > limit)
            return -1;
        if (p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
            return i;
        i++;
    }
    return -1;
}

/* A request-target p[a .. b): whether every byte is visible ASCII (0x21 to
 * 0x7E), as gunicorn requires. Sets *question and *hash to the index of the
 * first '?' and '#' (b when there is none) and *percent to whether a '%'
 * occurs. Returns 0, or -1 for a byte that is not allowed. */
static inline int tw_scan_target(const char *p, ptrdiff_t a, ptrdiff_t b, ptrdiff_t limit,
                                 ptrdiff_t *question, ptrdiff_t *hash, int *percent)
{
    ptrdiff_t i = a;
    *question = b;
    *hash = b;
    *percent = 0;
#if TW_HAVE_SSE2
    const __m128i lo = _mm_set1_epi8(0x21);
    const __m128i del = _mm_set1_epi8(0x7f);
    const __m128i q = _mm_set1_epi8('?');
    const __m128i h = _mm_set1_epi8('#');
    const __m128i pc = _mm_set1_epi8('%');
    while (i < b && i + 16 <= limit) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        /* lanes past b belong to the rest of the line */
        unsigned int keep = (b - i >= 16) ? 0xffffu : ((1u << (b - i)) - 1u);
        /* signed: bytes from 0x80 are negative, so below 0x21 too */
        unsigned int bad = (unsigned int)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmplt_epi8(v, lo), _mm_cmpeq_epi8(v, del))) & keep;
        if (bad)
            return -1;
        unsigned int mq = (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, q)) & keep;
        unsigned int mh = (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, h)) & keep;
        unsigned int mp = (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, pc)) & keep;
        if (mq && *question == b)
            *question = i + __builtin_ctz(mq);
        if (mh && *hash == b)
            *hash = i + __builtin_ctz(mh);
        if (mp)
            *percent = 1;
        i += 16;
    }
#endif
    for (; i < b; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e)
            return -1;
        if (c == '?' && *question == b)
            *question = i;
        else if (c == '#' && *hash == b)
            *hash = i;
        else if (c == '%')
            *percent = 1;
    }
    return 0;
}

#endif
