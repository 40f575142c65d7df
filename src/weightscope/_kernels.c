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
 *
 * No multiply-add is fused (fp-contract off): every version of a loop, and numpy's own path, round alike.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

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

static PyMethodDef methods[] = {
    {"block_figures", (PyCFunction)block_figures, METH_O,
     "block_figures(block) -> (sum, squares, min, max, zeros) of native float32/float64 values, or None"},
    {"deviations", (PyCFunction)(void (*)(void))deviations, METH_FASTCALL,
     "deviations(block, mean) -> (sum of x - mean, sum of (x - mean) squared)"},
    {"pair_figures", (PyCFunction)(void (*)(void))pair_figures, METH_FASTCALL,
     "pair_figures(a, b, rtol, atol) -> (max |a - b|, mismatched, a.b, a.a, b.b, gap.gap), or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "weightscope._kernels",
                                    "The fused figures of a block of float values, in one pass (see _kernels.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
