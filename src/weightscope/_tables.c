/* weightscope._tables: a TensorFlow ``.index`` table's blocks and its ``BundleEntryProto`` entries, parsed in
 * compiled code.
 *
 * ``weightscope.containers.table`` and ``weightscope.formats._bundle_index`` hold the reference parsers, in
 * Python and numpy; they take what this module leaves (it is optional: where it cannot be built, they do all the
 * work, and the tests hold the two paths equal). At 2,000 entries numpy's cost per call is most of an open; here
 * each block and entry is walked once, with no call per step.
 *
 * The input is hostile: every length, varint and offset is checked against the end of what holds it before a
 * byte is read. On anything that is not laid out as TensorFlow writes it, or that a reader must refuse, the
 * functions give None (or leave the entry undecoded), and the Python path runs and raises its own typed error.
 *
 * parse_blocks(blocks, room) -> (keys, bounds, cost) | None
 *     ``blocks``: a list of (separator bytes, offset, contents buffer), the data blocks in index order. The
 *     entries of every block in order, as ``containers.table.iter_table`` reads them: ``keys`` (each key made
 *     whole from its shared prefix, decoded as UTF-8 with surrogateescape), ``bounds`` (a bytearray of int64: every
 *     value's start, then every value's end, as offsets into the blocks' contents joined in order) and ``cost``
 *     (the keys' memory as ``limits.Budget`` charges it: 2 a key byte and 80 a key). None where a block breaks the
 *     format (a restart count the block cannot hold, an entry running past the restart array, a varint over 5 bytes,
 *     a shared prefix longer than the key before it, keys not strictly increasing, a block's last key past its
 *     separator) or the cost would pass ``room``.
 * decode_entries(data, starts, ends) -> bytearray | None
 *     The entries ``data[starts[i]:ends[i]]`` (``starts``, ``ends``: C-contiguous int64 buffers), decoded as
 *     ``_bundle_index.decode_entries`` decodes them, taking the same entries: a bytearray of n rows of 15 int64
 *     (decoded 0/1, dtype, shard, offset, size, crc32c, rank, then 8 dims, 1 past the entry's rank; an entry's
 *     fields together, so the writes go to one place, not to 15 that may share cache sets). None where a bound
 *     lies outside ``data``.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KEY_BYTE_COST 2 /* weightscope.containers.table._KEY_BYTE_COST */
#define KEY_COST 80     /* weightscope.containers.table._KEY_COST */
#define HEADER_VARINT 5 /* bytes of a block entry's varint32 */
#define FIELD_VARINT 7  /* bytes of an entry's varints that _bundle_index decodes (values below 2**49) */
#define MAX_RANK 8      /* weightscope.formats._bundle_index.MAX_RANK */
#define ROWS (7 + MAX_RANK)

/* The varint at data[*pos] ending before ``limit`` and within ``longest`` bytes; 0 where there is none. */
static int read_varint(const unsigned char *data, Py_ssize_t limit, Py_ssize_t *pos, int longest, uint64_t *value) {
    uint64_t result = 0;
    Py_ssize_t at = *pos;
    for (int i = 0; i < longest && at < limit; i++) {
        unsigned char byte = data[at++];
        result |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            *value = result;
            *pos = at;
            return 1;
        }
    }
    return 0;
}

static uint32_t load_u32(const unsigned char *bytes) {
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
}

/* -- parse_blocks --------------------------------------------------------------------------------------------- */

typedef struct {
    unsigned char *key; /* the last key made (the next one shares a prefix of it) */
    Py_ssize_t key_length, key_capacity;
    int64_t *bounds; /* value start, value end, for each entry */
    Py_ssize_t entries, bounds_capacity;
    long long cost, room;
    PyObject *keys;
} Parse;

static int grow(void **memory, Py_ssize_t *capacity, Py_ssize_t needed, size_t item) {
    if (needed <= *capacity) return 1;
    Py_ssize_t wanted = *capacity * 2 > needed ? *capacity * 2 : needed;
    if ((size_t)wanted > PY_SSIZE_T_MAX / item) return 0;
    void *larger = PyMem_Realloc(*memory, (size_t)wanted * item);
    if (larger == NULL) return 0;
    *memory = larger;
    *capacity = wanted;
    return 1;
}

/* A key as str, decoded as UTF-8 with surrogateescape; an ASCII key (as nearly all are) copied straight in. */
static PyObject *make_name(const unsigned char *key, Py_ssize_t length) {
    unsigned char high = 0;
    for (Py_ssize_t i = 0; i < length; i++) high |= key[i];
    if (high >= 0x80) return PyUnicode_DecodeUTF8((const char *)key, length, "surrogateescape");
    PyObject *name = PyUnicode_New(length, 0x7F);
    if (name != NULL) memcpy(PyUnicode_DATA(name), key, (size_t)length);
    return name;
}

/* The entries of one block: 1 when taken, 0 when the format is broken (or memory ran out: an error set). */
static int parse_block(Parse *parse, const unsigned char *block, Py_ssize_t size, Py_ssize_t base,
                       const unsigned char *separator, Py_ssize_t separator_length) {
    if (size < 4) return 0;
    uint32_t restarts = load_u32(block + size - 4);
    if (restarts > (uint64_t)(size - 4) / 4) return 0;
    Py_ssize_t limit = size - 4 - 4 * (Py_ssize_t)restarts, pos = 0;
    Py_ssize_t shareable = 0; /* a block's first key shares nothing */
    int taken = 0;
    while (pos < limit) {
        uint64_t shared, fresh, value_length;
        if (!read_varint(block, limit, &pos, HEADER_VARINT, &shared) ||
            !read_varint(block, limit, &pos, HEADER_VARINT, &fresh) ||
            !read_varint(block, limit, &pos, HEADER_VARINT, &value_length))
            return 0;
        /* Each value is below 2**35, so the sums cannot overflow. */
        if (shared > (uint64_t)shareable || fresh + value_length > (uint64_t)(limit - pos)) return 0;
        parse->cost += KEY_BYTE_COST * (long long)(shared + fresh) + KEY_COST;
        if (parse->cost > parse->room) return 0;
        const unsigned char *new_bytes = block + pos;
        Py_ssize_t length = (Py_ssize_t)(shared + fresh);
        if (parse->entries) { /* strictly after the key before: the first `shared` bytes are the same */
            Py_ssize_t rest = parse->key_length - (Py_ssize_t)shared;
            size_t compared = (size_t)((Py_ssize_t)fresh < rest ? (Py_ssize_t)fresh : rest);
            int order = memcmp(new_bytes, parse->key + shared, compared);
            if (order < 0 || (order == 0 && length <= parse->key_length)) return 0;
        }
        if (!grow((void **)&parse->key, &parse->key_capacity, length, 1) ||
            !grow((void **)&parse->bounds, &parse->bounds_capacity, 2 * (parse->entries + 1), sizeof(int64_t))) {
            PyErr_NoMemory();
            return 0;
        }
        memcpy(parse->key + shared, new_bytes, (size_t)fresh);
        parse->key_length = shareable = length;
        PyObject *name = make_name(parse->key, length);
        if (name == NULL) return 0;
        int appended = PyList_Append(parse->keys, name);
        Py_DECREF(name);
        if (appended < 0) return 0;
        pos += (Py_ssize_t)fresh;
        parse->bounds[2 * parse->entries] = base + pos;
        pos += (Py_ssize_t)value_length;
        parse->bounds[2 * parse->entries + 1] = base + pos;
        parse->entries++;
        taken = 1;
    }
    if (taken) { /* the block's last key is at most its separator */
        Py_ssize_t common = parse->key_length < separator_length ? parse->key_length : separator_length;
        int order = memcmp(parse->key, separator, (size_t)common);
        if (order > 0 || (order == 0 && parse->key_length > separator_length)) return 0;
    }
    return 1;
}

static PyObject *parse_blocks(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse_blocks(blocks, room) takes 2 arguments");
        return NULL;
    }
    long long room = PyLong_AsLongLong(args[1]);
    if (room == -1 && PyErr_Occurred()) return NULL;
    PyObject *blocks = PySequence_Fast(args[0], "parse_blocks: blocks must be a sequence");
    if (blocks == NULL) return NULL;
    Parse parse = {PyMem_Malloc(256), 0, 256, PyMem_Malloc(1024 * sizeof(int64_t)), 0, 1024, 0, room, PyList_New(0)};
    PyObject *result = NULL;
    int taken = parse.key != NULL && parse.bounds != NULL && parse.keys != NULL;
    if (!taken && !PyErr_Occurred()) PyErr_NoMemory();
    Py_ssize_t base = 0;
    for (Py_ssize_t i = 0; taken && i < PySequence_Fast_GET_SIZE(blocks); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(blocks, i);
        char *separator;
        Py_ssize_t separator_length;
        Py_buffer contents;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "parse_blocks: each block is (separator, offset, contents)");
            taken = 0;
            break;
        }
        if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(item, 0), &separator, &separator_length) < 0 ||
            PyObject_GetBuffer(PyTuple_GET_ITEM(item, 2), &contents, PyBUF_SIMPLE) < 0) {
            taken = 0;
            break;
        }
        taken = parse_block(&parse, contents.buf, contents.len, base, (const unsigned char *)separator,
                            separator_length);
        base += contents.len;
        PyBuffer_Release(&contents);
    }
    Py_DECREF(blocks);
    if (taken) {
        PyObject *bounds = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(2 * parse.entries * sizeof(int64_t)));
        if (bounds != NULL) {
            int64_t *out = (int64_t *)PyByteArray_AS_STRING(bounds);
            for (Py_ssize_t i = 0; i < parse.entries; i++) {
                out[i] = parse.bounds[2 * i];
                out[parse.entries + i] = parse.bounds[2 * i + 1];
            }
            result = Py_BuildValue("(ONL)", parse.keys, bounds, parse.cost);
        }
    } else if (!PyErr_Occurred()) {
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(parse.keys);
    PyMem_Free(parse.key);
    PyMem_Free(parse.bounds);
    return result;
}

/* -- decode_entries ------------------------------------------------------------------------------------------- */

/* (field number, tag) in the order TensorFlow writes them; 2 is the shape, 6 the crc32c (fixed32). */
static const unsigned char FIELD_TAGS[6] = {0x08, 0x12, 0x18, 0x20, 0x28, 0x35};
#define DIM_TAG 0x12      /* TensorShapeProto.dim */
#define DIM_SIZE_TAG 0x08 /* Dim.size */

/* The dims of the shape in data[at:end], each holding only its size (or nothing: size 0); the rank, or -1. */
static int decode_shape(const unsigned char *data, Py_ssize_t at, Py_ssize_t end, int64_t *dims) {
    int rank = 0;
    while (at < end) {
        if (rank == MAX_RANK || end - at < 2 || data[at] != DIM_TAG) return -1;
        Py_ssize_t following = at + 2 + data[at + 1];
        if (following > end) return -1;
        uint64_t size = 0;
        if (following > at + 2) { /* 08, then a varint filling the rest of the dim */
            Py_ssize_t pos = at + 3;
            if (data[at + 2] != DIM_SIZE_TAG || !read_varint(data, following, &pos, FIELD_VARINT, &size) ||
                pos != following)
                return -1;
        }
        dims[rank++] = (int64_t)size;
        at = following;
    }
    return rank;
}

/* One entry's fields into ``row`` (a column stride apart); whether it is decoded. */
static int decode_entry(const unsigned char *data, Py_ssize_t at, Py_ssize_t end, int64_t *values, int64_t *dims) {
    Py_ssize_t shape_at = 0, shape_end = 0;
    for (int field = 0; field < 6; field++) {
        if (at >= end || data[at] != FIELD_TAGS[field]) continue;
        Py_ssize_t pos = at + 1;
        uint64_t value;
        if (field == 5) {
            if (end - pos < 4) return 0;
            value = load_u32(data + pos);
            pos += 4;
        } else if (!read_varint(data, end, &pos, FIELD_VARINT, &value)) {
            return 0;
        }
        if (field == 1) {
            if (value > (uint64_t)(end - pos)) return 0;
            shape_at = pos;
            shape_end = pos += (Py_ssize_t)value;
        } else {
            values[field] = (int64_t)value;
        }
        at = pos;
    }
    if (at != end) return 0; /* slices, unknown, repeated or misplaced fields: protobuf's */
    int rank = decode_shape(data, shape_at, shape_end, dims);
    if (rank < 0) return 0;
    values[1] = rank;
    return 1;
}

static int int64_buffer(PyObject *object, Py_buffer *view) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return 0;
    const char *format = view->format;
    if (format[0] == '<' || format[0] == '=' || format[0] == '@') format++;
    if (view->itemsize != 8 || (strcmp(format, "l") != 0 && strcmp(format, "q") != 0)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "decode_entries: starts and ends must be int64 arrays");
        return 0;
    }
    return 1;
}

static PyObject *decode_entries(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode_entries(data, starts, ends) takes 3 arguments");
        return NULL;
    }
    Py_buffer data, starts, ends;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    if (!int64_buffer(args[1], &starts)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (!int64_buffer(args[2], &ends)) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&starts);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = starts.len / 8;
    if (ends.len != starts.len) {
        PyErr_SetString(PyExc_ValueError, "decode_entries: as many starts as ends are needed");
        goto done;
    }
    result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(ROWS * n * sizeof(int64_t)));
    if (result == NULL) goto done;
    int64_t *out = (int64_t *)PyByteArray_AS_STRING(result);
    const int64_t *start = starts.buf, *stop = ends.buf;
    const unsigned char *bytes = data.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (start[i] < 0 || start[i] > stop[i] || stop[i] > data.len) {
            Py_SETREF(result, Py_NewRef(Py_None));
            goto done;
        }
        /* values: dtype, rank, shard, offset, size, crc32c (indexed by field, the shape's slot holding the rank) */
        int64_t values[6] = {0}, dims[MAX_RANK];
        int decoded = decode_entry(bytes, start[i], stop[i], values, dims);
        int rank = decoded ? (int)values[1] : 0;
        int64_t *row = out + ROWS * i;
        row[0] = decoded;
        row[1] = decoded ? values[0] : 0;
        for (int field = 2; field < 6; field++) row[field] = decoded ? values[field] : 0;
        row[6] = rank;
        for (int axis = 0; axis < MAX_RANK; axis++) row[7 + axis] = axis < rank ? dims[axis] : 1;
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_blocks", (PyCFunction)(void (*)(void))parse_blocks, METH_FASTCALL,
     "parse_blocks(blocks, room) -> (keys, bounds, cost) of a table's data blocks, or None"},
    {"decode_entries", (PyCFunction)(void (*)(void))decode_entries, METH_FASTCALL,
     "decode_entries(data, starts, ends) -> 15 rows of int64 fields of BundleEntryProto entries, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "weightscope._tables",
                                    "TensorFlow index tables and bundle entries, parsed (see _tables.c).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__tables(void) { return PyModule_Create(&module); }
