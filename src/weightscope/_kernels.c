/* weightscope._kernels: the fused figures of a block of floating-point values, in one pass, without the GIL.
 *
 * ``weightscope.blocks`` takes a float tensor's figures block by block. numpy needs seven passes over a block for
 * them (min, max, zeros, a widening copy, two float64 dot products), each a call with its own cost; here one loop
 * takes them all while the block streams through the core once, and the interpreter's lock is released for the
 * whole block, so threads scale. It is optional: where it cannot be built, ``blocks`` takes the numpy path, and the
 * tests hold the two equal.
 *
 * block_figures(block) -> (sum, sum of squares, min, max, zeros) | None
 *     ``block`` is a C-contiguous buffer of native float32 ("f") or float64 ("d"). Sums are float64 (the products
 *     of float32 values are exact in float64), added in independent lanes (the order is fixed by the block, so the
 *     figures are the same on every call and thread); min, max and zeros in the stored type. None when the block
 *     holds a NaN or an infinity, or its squares overflow float64 (values beyond 1e154): every such value makes the
 *     sum of squares non-finite, and the caller takes its general path for that block.
 * deviations(block, mean) -> (sum of (x - mean), sum of (x - mean) squared)
 *     The second pass where the mean dominates the spread (see ``blocks``).
 * pair_figures(a, b, rtol, atol) -> (max |a - b|, mismatched, a · b, a · a, b · b, (a - b) · (a - b)) | None
 *     Two blocks of one type and length, each value widened to float64: ``mismatched`` counts the values with
 *     |a - b| > atol + rtol · |b| (numpy's isclose, its operations in its order). None when either holds a NaN or
 *     an infinity, or its squares overflow. Blocks holding the same bytes give a · b = a · a = b · b exactly (the
 *     same products in the same lanes) and no gap, as ``blocks``' byte compare does.
 * crc32(data, value) -> int | None
 *     The zip CRC-32 (zlib's: polynomial 0xEDB88320, reflected) of a C-contiguous buffer, continuing ``value``: the
 *     buffer folded 64 bytes a step in four 128-bit lanes by carry-less multiplication (PCLMULQDQ), then reduced
 *     (Barrett), as Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ" and Chromium's zlib do it,
 *     asking for the bytes 8 KiB ahead. zlib-ng's own loop (AVX-512) is three times faster in cache and slower from
 *     memory: 12 GiB/s against 20 on this project's Xeon over a gigabyte, where the hardware's prefetching stops at
 *     each page. None where the CPU has no PCLMULQDQ and SSE4.1, or the buffer is under 64 bytes: zlib-ng then.
 *
 * No multiply-add is fused (fp-contract off): every version of a loop, and numpy's own path, round alike.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Several versions of each loop, one per vector width, chosen when the module loads (GCC's function
 * multiversioning, through the ELF loader's ifunc): the baseline x86-64 build has only SSE2. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VERSIONED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VERSIONED
#endif

#define LANES 16 /* independent partial sums: the additions vectorise and pipeline */

/* Each loop asks for the bytes 2 KiB ahead of those it adds: from memory (not cache) it ran at 0.7x numpy's
 * float32 sum without, 1.1x with (the hardware's own prefetching stops at page boundaries). A prefetch never
 * faults, so past a block's end it is harmless. */
#if defined(__GNUC__) || defined(__clang__)
#define AHEAD(POINTER) __builtin_prefetch((const char *)(POINTER) + 2048)
#else
#define AHEAD(POINTER) ((void)0)
#endif

typedef struct {
    double sum, squares, low, high;
    Py_ssize_t zeros;
} Figures;

#define FIGURES_STEP(TYPE, LANE, VALUE)                                                                            \
    {                                                                                                              \
        TYPE value = (VALUE);                                                                                      \
        double wide = value;                                                                                       \
        sum[LANE] += wide;                                                                                         \
        squares[LANE] += wide * wide;                                                                              \
        low[LANE] = value < low[LANE] ? value : low[LANE];                                                         \
        high[LANE] = value > high[LANE] ? value : high[LANE];                                                      \
        zeros[LANE] += value == 0;                                                                                 \
    }

/* Each loop adds LANES values at a time, one into each lane, and the last values (fewer than LANES) into the
 * first lane. */
#define FIGURES_LOOP(NAME, TYPE)                                                                                   \
    VERSIONED static void NAME(const TYPE *values, Py_ssize_t count, Figures *out) {                              \
        double sum[LANES] = {0}, squares[LANES] = {0};                                                            \
        TYPE low[LANES], high[LANES];                                                                              \
        Py_ssize_t zeros[LANES] = {0};                                                                             \
        Py_ssize_t whole = count - count % LANES, index;                                                           \
        for (int lane = 0; lane < LANES; lane++) low[lane] = high[lane] = values[0];                               \
        for (index = 0; index < whole; index += LANES) {                                                           \
            AHEAD(values + index);                                                                                 \
            for (int lane = 0; lane < LANES; lane++) FIGURES_STEP(TYPE, lane, values[index + lane])                \
        }                                                                                                          \
        for (; index < count; index++) FIGURES_STEP(TYPE, 0, values[index])                                        \
        *out = (Figures){0.0, 0.0, low[0], high[0], 0};                                                            \
        for (int lane = 0; lane < LANES; lane++) {                                                                 \
            out->sum += sum[lane];                                                                                 \
            out->squares += squares[lane];                                                                         \
            out->low = low[lane] < out->low ? low[lane] : out->low;                                                \
            out->high = high[lane] > out->high ? high[lane] : out->high;                                           \
            out->zeros += zeros[lane];                                                                             \
        }                                                                                                          \
    }

#define DEVIATIONS_STEP(LANE, VALUE)                                                                               \
    {                                                                                                              \
        double gap = (double)(VALUE) - mean;                                                                       \
        sum[LANE] += gap;                                                                                          \
        squares[LANE] += gap * gap;                                                                                \
    }

#define DEVIATIONS_LOOP(NAME, TYPE)                                                                                \
    VERSIONED static void NAME(const TYPE *values, Py_ssize_t count, double mean, double out[2]) {                \
        double sum[LANES] = {0}, squares[LANES] = {0};                                                            \
        Py_ssize_t whole = count - count % LANES, index;                                                           \
        for (index = 0; index < whole; index += LANES) {                                                           \
            AHEAD(values + index);                                                                                 \
            for (int lane = 0; lane < LANES; lane++) DEVIATIONS_STEP(lane, values[index + lane])                   \
        }                                                                                                          \
        for (; index < count; index++) DEVIATIONS_STEP(0, values[index])                                           \
        out[0] = out[1] = 0.0;                                                                                     \
        for (int lane = 0; lane < LANES; lane++) {                                                                 \
            out[0] += sum[lane];                                                                                   \
            out[1] += squares[lane];                                                                               \
        }                                                                                                          \
    }

typedef struct {
    double max_abs, products, a_squares, b_squares, gap_squares;
    Py_ssize_t mismatched;
} PairFigures;

#define PAIR_STEP(LANE, A, B)                                                                                      \
    {                                                                                                              \
        double x = (A), y = (B), gap = fabs(x - y);                                                                \
        products[LANE] += x * y;                                                                                   \
        a_squares[LANE] += x * x;                                                                                  \
        b_squares[LANE] += y * y;                                                                                  \
        gap_squares[LANE] += gap * gap;                                                                            \
        max_abs[LANE] = gap > max_abs[LANE] ? gap : max_abs[LANE];                                                 \
        mismatched[LANE] += gap > fabs(y) * rtol + atol;                                                           \
    }

#define PAIR_LOOP(NAME, TYPE)                                                                                      \
    VERSIONED static void NAME(const TYPE *a, const TYPE *b, Py_ssize_t count, double rtol, double atol,           \
                               PairFigures *out) {                                                                 \
        double products[LANES] = {0}, a_squares[LANES] = {0}, b_squares[LANES] = {0};                            \
        double gap_squares[LANES] = {0}, max_abs[LANES] = {0};                                                    \
        Py_ssize_t mismatched[LANES] = {0};                                                                        \
        Py_ssize_t whole = count - count % LANES, index;                                                           \
        for (index = 0; index < whole; index += LANES) {                                                           \
            AHEAD(a + index);                                                                                      \
            AHEAD(b + index);                                                                                      \
            for (int lane = 0; lane < LANES; lane++) PAIR_STEP(lane, a[index + lane], b[index + lane])             \
        }                                                                                                          \
        for (; index < count; index++) PAIR_STEP(0, a[index], b[index])                                            \
        *out = (PairFigures){0.0, 0.0, 0.0, 0.0, 0.0, 0};                                                          \
        for (int lane = 0; lane < LANES; lane++) {                                                                 \
            out->products += products[lane];                                                                       \
            out->a_squares += a_squares[lane];                                                                     \
            out->b_squares += b_squares[lane];                                                                     \
            out->gap_squares += gap_squares[lane];                                                                 \
            out->max_abs = max_abs[lane] > out->max_abs ? max_abs[lane] : out->max_abs;                            \
            out->mismatched += mismatched[lane];                                                                   \
        }                                                                                                          \
    }

FIGURES_LOOP(figures_float32, float)
FIGURES_LOOP(figures_float64, double)
DEVIATIONS_LOOP(deviations_float32, float)
DEVIATIONS_LOOP(deviations_float64, double)
PAIR_LOOP(pair_float32, float)
PAIR_LOOP(pair_float64, double)

/* The block's buffer: C-contiguous, one-dimensional or flat, native float32 or float64. Returns its item size
 * (4 or 8), or 0 with an exception set. */
static int take_block(PyObject *object, Py_buffer *view) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return 0;
    const char *format = view->format ? view->format : "B";
    /* The machine's own byte order, however it is spelled: numpy names a little-endian float32 '<f'. */
    if (format[0] == '=' || format[0] == '@' || format[0] == (PY_LITTLE_ENDIAN ? '<' : '>') ||
        (!PY_LITTLE_ENDIAN && format[0] == '!'))
        format++;
    if (format[1] == '\0' && ((format[0] == 'f' && view->itemsize == 4) || (format[0] == 'd' && view->itemsize == 8)))
        return (int)view->itemsize;
    PyErr_Format(PyExc_TypeError, "a block of native float32 or float64 values is needed, not format '%s'",
                 view->format ? view->format : "B");
    PyBuffer_Release(view);
    return 0;
}

static PyObject *block_figures(PyObject *module, PyObject *block) {
    Py_buffer view;
    int itemsize = take_block(block, &view);
    if (!itemsize) return NULL;
    Py_ssize_t count = view.len / itemsize;
    if (!count) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "an empty block has no figures");
        return NULL;
    }
    Figures figures;
    Py_BEGIN_ALLOW_THREADS;
    if (itemsize == 4)
        figures_float32((const float *)view.buf, count, &figures);
    else
        figures_float64((const double *)view.buf, count, &figures);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    if (!isfinite(figures.squares) || !isfinite(figures.sum)) Py_RETURN_NONE;
    return Py_BuildValue("(ddddn)", figures.sum, figures.squares, figures.low, figures.high, figures.zeros);
}

static PyObject *deviations(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "deviations(block, mean) takes two arguments");
        return NULL;
    }
    double mean = PyFloat_AsDouble(args[1]), sums[2];
    if (mean == -1.0 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    int itemsize = take_block(args[0], &view);
    if (!itemsize) return NULL;
    Py_ssize_t count = view.len / itemsize;
    Py_BEGIN_ALLOW_THREADS;
    if (itemsize == 4)
        deviations_float32((const float *)view.buf, count, mean, sums);
    else
        deviations_float64((const double *)view.buf, count, mean, sums);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    return Py_BuildValue("(dd)", sums[0], sums[1]);
}

static PyObject *pair_figures(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "pair_figures(a, b, rtol, atol) takes four arguments");
        return NULL;
    }
    double rtol = PyFloat_AsDouble(args[2]), atol = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer a, b;
    int itemsize = take_block(args[0], &a);
    if (!itemsize) return NULL;
    int other = take_block(args[1], &b);
    if (!other) {
        PyBuffer_Release(&a);
        return NULL;
    }
    if (other != itemsize || a.len != b.len || !a.len) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "two blocks of one type and length, not empty, are needed");
        return NULL;
    }
    Py_ssize_t count = a.len / itemsize;
    PairFigures figures;
    Py_BEGIN_ALLOW_THREADS;
    if (itemsize == 4)
        pair_float32((const float *)a.buf, (const float *)b.buf, count, rtol, atol, &figures);
    else
        pair_float64((const double *)a.buf, (const double *)b.buf, count, rtol, atol, &figures);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (!isfinite(figures.a_squares) || !isfinite(figures.b_squares)) Py_RETURN_NONE;
    return Py_BuildValue("(dndddd)", figures.max_abs, figures.mismatched, figures.products, figures.a_squares,
                         figures.b_squares, figures.gap_squares);
}


/* -- the zip CRC-32 ---------------------------------------------------------------------------------------------- */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define CRC_FOLDING 1
#define CRC_AHEAD 8192 /* bytes prefetched ahead of the fold */

/* The CRC-32 register (not inverted) after ``length`` bytes (a multiple of 16, at least 64) from ``register_``:
 * constants x^(4*128+32) mod P, x^(4*128-32) mod P (folding by four lanes), x^(128+32), x^(128-32) (by one),
 * x^64 mod P, and P' and mu for the Barrett reduction, all bit-reflected. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_fold(const unsigned char *bytes, size_t length,
                                                                    uint32_t register_) {
    const __m128i four = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4), one = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0), x64 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i barrett = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    __m128i lane[4], folded;
    for (int k = 0; k < 4; k++) lane[k] = _mm_loadu_si128((const __m128i *)(bytes + 16 * k));
    lane[0] = _mm_xor_si128(lane[0], _mm_cvtsi32_si128((int)register_));
    for (bytes += 64, length -= 64; length >= 64; bytes += 64, length -= 64) {
        _mm_prefetch((const char *)bytes + CRC_AHEAD, _MM_HINT_T0);
        for (int k = 0; k < 4; k++) {
            folded = _mm_clmulepi64_si128(lane[k], four, 0x00);
            lane[k] = _mm_clmulepi64_si128(lane[k], four, 0x11);
            lane[k] = _mm_xor_si128(_mm_xor_si128(lane[k], folded), _mm_loadu_si128((const __m128i *)(bytes + 16 * k)));
        }
    }
    __m128i x = lane[0];
    for (int k = 1; k <= 3 + (int)(length / 16); k++) { /* the other lanes, then the 16-byte steps left */
        __m128i next = k <= 3 ? lane[k] : _mm_loadu_si128((const __m128i *)(bytes + 16 * (k - 4)));
        folded = _mm_clmulepi64_si128(x, one, 0x00);
        x = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, one, 0x11), next), folded);
    }
    x = _mm_xor_si128(_mm_srli_si128(x, 8), _mm_clmulepi64_si128(x, one, 0x10)); /* 128 -> 96 bits */
    x = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x, low32), x64, 0x00), _mm_srli_si128(x, 4)); /* -> 64 */
    __m128i quotient = _mm_clmulepi64_si128(_mm_and_si128(x, low32), barrett, 0x10);
    x = _mm_xor_si128(x, _mm_clmulepi64_si128(_mm_and_si128(quotient, low32), barrett, 0x00));
    return (uint32_t)_mm_extract_epi32(x, 1);
}
#endif

static PyObject *crc32(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "crc32(data, value) takes two arguments");
        return NULL;
    }
    unsigned long long value = PyLong_AsUnsignedLongLong(args[1]);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (value > 0xFFFFFFFFull) {
        PyErr_SetString(PyExc_OverflowError, "a CRC-32 value is under 2**32");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
#ifdef CRC_FOLDING
    size_t folded = (size_t)view.len & ~(size_t)15;
    if (folded >= 64 && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")) {
        const unsigned char *bytes = view.buf;
        uint32_t register_ = ~(uint32_t)value;
        Py_BEGIN_ALLOW_THREADS;
        register_ = crc32_fold(bytes, folded, register_);
        for (size_t i = folded; i < (size_t)view.len; i++) { /* the last 15 bytes at most, a bit at a time */
            register_ ^= bytes[i];
            for (int bit = 0; bit < 8; bit++) register_ = (register_ >> 1) ^ (0xEDB88320u & (0u - (register_ & 1u)));
        }
        Py_END_ALLOW_THREADS;
        PyBuffer_Release(&view);
        return PyLong_FromUnsignedLong(~register_);
    }
#endif
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"block_figures", (PyCFunction)block_figures, METH_O,
     "block_figures(block) -> (sum, squares, min, max, zeros) of native float32/float64 values, or None"},
    {"deviations", (PyCFunction)(void (*)(void))deviations, METH_FASTCALL,
     "deviations(block, mean) -> (sum of x - mean, sum of (x - mean) squared)"},
    {"pair_figures", (PyCFunction)(void (*)(void))pair_figures, METH_FASTCALL,
     "pair_figures(a, b, rtol, atol) -> (max |a - b|, mismatched, a.b, a.a, b.b, gap.gap), or None"},
    {"crc32", (PyCFunction)(void (*)(void))crc32, METH_FASTCALL,
     "crc32(data, value) -> the zip CRC-32 of data continuing value, or None (no PCLMULQDQ, or under 64 bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "weightscope._kernels",
                                    "The fused figures of a block of float values in one pass, and the zip CRC-32 (see _kernels.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
