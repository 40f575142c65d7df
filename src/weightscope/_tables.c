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
 * decode_entries(data, starts, ends) -> (fields, shapes) | None
 *     The entries ``data[starts[i]:ends[i]]`` (``starts``, ``ends``: C-contiguous int64 buffers), decoded as
 *     ``_bundle_index.decode_entries`` decodes them, taking the same entries: ``fields``, a bytearray of n rows of
 *     15 int64 (decoded 0/1, dtype, shard, offset, size, crc32c, rank, then 8 dims, 1 past the entry's rank; an
 *     entry's fields together, so the writes go to one place, not to 15 that may share cache sets), and
 *     ``shapes``, each entry's shape as a tuple of ints (``()`` for an entry not decoded), one tuple for equal
 *     shapes, as ``_bundle_entries._shapes`` makes them. None where a bound lies outside ``data``.
 * check_entries(rows, element_index, itemsizes, shard_sizes) -> (checked, unknown)
 *     ``TensorFlowCheckpoint._check_entries``' checks of decode_entries' ``rows``, as its numpy path makes them:
 *     ``checked``, a bytearray of n rows of 3 int64 (element type, an index into ``itemsizes``, by
 *     ``element_index[dtype]``; shard; whether the entry passes every check), element and shard 0 where it does
 *     not. An element whose item size is not known yet (-1: its dtype not made) fails its entries, and is listed
 *     in ``unknown`` (the caller makes its dtype and asks again).
 * entry_columns(rows, checked, shapes, dtypes, type_names, files, numbers, start, columns) -> odd
 *     The n entries of decode_entries' ``rows`` and ``shapes`` and check_entries' ``checked`` rows, set into
 *     ``TensorFlowCheckpoint._load_entries``' columns at ``start + i``: ``columns``, 4 lists as long as ``numbers``'
 *     rows, take their dtypes (``dtypes[element]``), shapes, type names (``type_names[element]``) and files
 *     (``files[shard]``), ``numbers`` (5 rows of int64, C-contiguous, writable) their crc32c, shard, offset, size
 *     where the entry passes (else 0: its extent) and size. Gives ``odd``, the indices (``start`` added) of the
 *     entries not passing every check. One pass, where numpy's dozen small calls cost ~5 us each in memory a
 *     collection has left cold, and no chunk's columns to join after.
 * first_overlap(extents, order) -> (first, second) | None
 *     The first two entries with a size (3 rows of int64 extents: shard, offset, size) that follow each other in
 *     ``order`` (the entries sorted by shard, then offset: a stable sort's indices) and overlap: one walk, where
 *     numpy gathered each row into a new array twice over (``TensorFlowCheckpoint._check_overlaps``).
 * rows(cls, columns) -> iterator
 *     ``map(tuple.__new__, repeat(cls), zip(*columns, strict=True))`` for a tuple subclass ``cls`` (``TensorInfo``)
 *     and ``columns``, lists or one-dimensional int64 arrays (their items made ints as each row is): each row made
 *     in one allocation, not two (a listing of 100,000 infos makes 100,000).
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
        /* Its hash taken now, while its bytes are in cache: a listing puts every name in a dict. */
        if (name == NULL || PyObject_Hash(name) == -1) {
            Py_XDECREF(name);
            return 0;
        }
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
        PyErr_SetString(PyExc_TypeError, "C-contiguous int64 arrays are needed");
        return 0;
    }
    return 1;
}

/* Shapes made once each: a small open-addressing table from (rank, dims) to the tuple, for one call. A slot holds
 * the tuple and its key's hash only (16 bytes, where rank and dims took 80: the table is written whole at every
 * open, in memory a collection has just left cold), and the table has room for twice the entries at most. */
#define SHAPE_SLOTS 1024 /* the most slots, a power of 2 */
#define SHAPE_PROBES 8   /* slots tried before a shape is made without being kept */

typedef struct {
    PyObject *shape; /* NULL: a free slot */
    uint64_t hash;
} ShapeSlot;

/* Whether ``shape`` (a tuple made by shape_tuple: exact ints from int64s) holds ``rank`` dims equal to ``dims``. */
static int same_shape(PyObject *shape, int rank, const int64_t *dims) {
    if (PyTuple_GET_SIZE(shape) != rank) return 0;
    for (int axis = 0; axis < rank; axis++)
        if (PyLong_AsLongLong(PyTuple_GET_ITEM(shape, axis)) != dims[axis]) return 0;
    return 1;
}

/* A new reference to the tuple of ``rank`` dims, shared with every equal shape met before in ``slots`` (``mask``:
 * their count less 1). */
static PyObject *shape_tuple(ShapeSlot *slots, uint64_t mask, int rank, const int64_t *dims) {
    uint64_t hash = (uint64_t)rank;
    for (int axis = 0; axis < rank; axis++) hash = hash * 0x9E3779B97F4A7C15u + (uint64_t)dims[axis];
    hash *= 0x9E3779B97F4A7C15u;
    ShapeSlot *slot = NULL;
    for (int probe = 0; probe < SHAPE_PROBES; probe++) {
        ShapeSlot *candidate = slots + (((hash >> 40) + (uint64_t)probe) & mask);
        if (candidate->shape == NULL) {
            slot = candidate;
            break;
        }
        if (candidate->hash == hash && same_shape(candidate->shape, rank, dims)) return Py_NewRef(candidate->shape);
    }
    PyObject *shape = PyTuple_New(rank);
    if (shape == NULL) return NULL;
    for (int axis = 0; axis < rank; axis++) {
        PyObject *size = PyLong_FromLongLong(dims[axis]);
        if (size == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, axis, size);
    }
    if (slot != NULL) {
        slot->shape = Py_NewRef(shape);
        slot->hash = hash;
    }
    return shape;
}

/* Every entry's fields into ``out`` (a row each) and its shape into ``shapes``; 0 with an error set if memory ran
 * out. */
static int decode_all(const unsigned char *bytes, const int64_t *start, const int64_t *stop, Py_ssize_t n,
                      int64_t *out, PyObject *shapes) {
    Py_ssize_t count = 16;
    while (count < SHAPE_SLOTS && count < 2 * n) count *= 2;
    ShapeSlot *slots = PyMem_Calloc((size_t)count, sizeof(ShapeSlot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    int done = 1;
    for (Py_ssize_t i = 0; done && i < n; i++) {
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
        PyObject *shape = shape_tuple(slots, (uint64_t)count - 1, rank, dims);
        if (shape == NULL) done = 0;
        else PyList_SET_ITEM(shapes, i, shape);
    }
    for (Py_ssize_t k = 0; k < count; k++) Py_XDECREF(slots[k].shape);
    PyMem_Free(slots);
    return done;
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
    PyObject *result = NULL, *fields = NULL, *shapes = NULL;
    Py_ssize_t n = starts.len / 8;
    const int64_t *start = starts.buf, *stop = ends.buf;
    if (ends.len != starts.len) {
        PyErr_SetString(PyExc_ValueError, "decode_entries: as many starts as ends are needed");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (start[i] < 0 || start[i] > stop[i] || stop[i] > data.len) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    fields = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(ROWS * n * sizeof(int64_t)));
    shapes = PyList_New(n); /* (its items NULL until set: freed alone, it skips them) */
    if (fields != NULL && shapes != NULL &&
        decode_all(data.buf, start, stop, n, (int64_t *)PyByteArray_AS_STRING(fields), shapes))
        result = PyTuple_Pack(2, fields, shapes);
done:
    Py_XDECREF(fields);
    Py_XDECREF(shapes);
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    return result;
}

/* -- check_entries ---------------------------------------------------------------------------------------------- */

/* ``buffer`` as a C-contiguous int64 array: its items, and their count. */
static int int64_items(PyObject *object, Py_buffer *view, const int64_t **items, Py_ssize_t *count) {
    if (!int64_buffer(object, view)) return 0;
    *items = view->buf;
    *count = view->len / 8;
    return 1;
}

static PyObject *check_entries(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "check_entries(rows, element_index, itemsizes, shard_sizes): 4 arguments");
        return NULL;
    }
    Py_buffer rows, index, sizes, shards;
    const int64_t *row, *element_of, *itemsize_of, *shard_size;
    Py_ssize_t n, codes, elements, num_shards;
    if (PyObject_GetBuffer(args[0], &rows, PyBUF_SIMPLE) < 0) return NULL;
    if (!int64_items(args[1], &index, &element_of, &codes)) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    if (!int64_items(args[2], &sizes, &itemsize_of, &elements)) {
        PyBuffer_Release(&rows);
        PyBuffer_Release(&index);
        return NULL;
    }
    if (!int64_items(args[3], &shards, &shard_size, &num_shards)) {
        PyBuffer_Release(&rows);
        PyBuffer_Release(&index);
        PyBuffer_Release(&sizes);
        return NULL;
    }
    PyObject *result = NULL, *checked = NULL, *unknown = NULL;
    char *met = NULL; /* the elements of unknown item size already listed */
    if (rows.len % (ROWS * sizeof(int64_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "check_entries: rows must be decode_entries' rows");
        goto done;
    }
    n = rows.len / (Py_ssize_t)(ROWS * sizeof(int64_t));
    row = rows.buf;
    checked = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(3 * n * sizeof(int64_t)));
    unknown = PyList_New(0);
    met = PyMem_Calloc((size_t)elements + 1, 1);
    if (checked == NULL || unknown == NULL || met == NULL) {
        if (met == NULL) PyErr_NoMemory();
        goto done;
    }
    int64_t *out = (int64_t *)PyByteArray_AS_STRING(checked);
    for (Py_ssize_t i = 0; i < n; i++, row += ROWS) {
        int64_t dtype = row[1], shard = row[2], offset = row[3], size = row[4], element = -1;
        int plain = row[0] != 0 && dtype >= 0 && dtype < codes;
        if (plain) element = element_of[dtype];
        plain = plain && element >= 0 && element < elements && shard >= 0 && shard < num_shards;
        plain = plain && offset >= 0 && size >= 0 && offset + size <= shard_size[shard];
        if (plain) { /* the element count, exact where the float product stays below 2**62 (as numpy's) */
            double estimate = 1;
            uint64_t count = 1;
            for (int axis = 0; axis < MAX_RANK; axis++) {
                estimate *= (double)row[7 + axis];
                count *= (uint64_t)row[7 + axis];
            }
            int64_t itemsize = itemsize_of[element];
            plain = estimate < 4611686018427387904.0; /* 2**62 */
            if (plain && itemsize < 0) { /* its dtype is not made yet: the caller makes it, and asks again */
                plain = 0;
                if (!met[element]) {
                    met[element] = 1;
                    PyObject *number = PyLong_FromLongLong(element);
                    if (number == NULL || PyList_Append(unknown, number) < 0) {
                        Py_XDECREF(number);
                        goto done;
                    }
                    Py_DECREF(number);
                }
            }
            if (plain && itemsize > 0) plain = size % itemsize == 0 && (uint64_t)(size / itemsize) == count;
        }
        out[3 * i] = plain ? element : 0;
        out[3 * i + 1] = plain ? shard : 0;
        out[3 * i + 2] = plain;
    }
    result = PyTuple_Pack(2, checked, unknown);
done:
    Py_XDECREF(checked);
    Py_XDECREF(unknown);
    PyMem_Free(met);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&index);
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&shards);
    return result;
}

/* -- entry_columns --------------------------------------------------------------------------------------------- */

/* The columns of n entries from decode_entries' rows and shapes and check_entries' rows (see the top). */
static PyObject *entry_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "entry_columns(rows, checked, shapes, dtypes, type_names, files, numbers, start, columns) "
                        "takes 9 arguments");
        return NULL;
    }
    PyObject *shapes = args[2], *dtypes = args[3], *type_names = args[4], *files = args[5], *columns = args[8];
    Py_ssize_t start = PyLong_AsSsize_t(args[7]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (!PyList_Check(shapes) || !PyList_Check(dtypes) || !PyList_Check(type_names) || !PyList_Check(files) ||
        !PyList_Check(columns) || PyList_GET_SIZE(columns) != 4) {
        PyErr_SetString(PyExc_TypeError, "entry_columns: shapes, dtypes, type_names, files and 4 columns: lists");
        return NULL;
    }
    Py_buffer rows, checked, numbers;
    if (PyObject_GetBuffer(args[0], &rows, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &checked, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    if (!int64_buffer(args[6], &numbers)) {
        PyBuffer_Release(&rows);
        PyBuffer_Release(&checked);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(shapes), total = numbers.len / 8 / 5;
    PyObject *result = NULL, *odd = NULL, *column[4];
    if (rows.len != n * ROWS * (Py_ssize_t)sizeof(int64_t) || checked.len != 3 * n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "entry_columns: rows, checked and shapes must be of the same entries");
        goto done;
    }
    if (numbers.readonly || numbers.len != 5 * total * 8) {
        PyErr_SetString(PyExc_ValueError, "entry_columns: numbers must be a writable int64 array of 5 rows");
        goto done;
    }
    for (int k = 0; k < 4; k++) {
        column[k] = PyList_GET_ITEM(columns, k);
        if (!PyList_Check(column[k]) || PyList_GET_SIZE(column[k]) != total) {
            PyErr_SetString(PyExc_ValueError, "entry_columns: each column must be a list as long as numbers' rows");
            goto done;
        }
    }
    if (start < 0 || start > total - n) {
        PyErr_SetString(PyExc_ValueError, "entry_columns: the entries lie past the numbers' end");
        goto done;
    }
    if ((odd = PyList_New(0)) == NULL) goto done;
    const int64_t *row = rows.buf, *check = checked.buf;
    int64_t *sum = (int64_t *)numbers.buf + start, *shard_at = sum + total, *offset_at = shard_at + total;
    int64_t *stored_at = offset_at + total, *size_at = stored_at + total;
    for (Py_ssize_t i = 0; i < n; i++, row += ROWS, check += 3) {
        int64_t element = check[0], shard = check[1], plain = check[2];
        if (element < 0 || element >= PyList_GET_SIZE(dtypes) || element >= PyList_GET_SIZE(type_names) ||
            shard < 0 || shard >= PyList_GET_SIZE(files)) {
            PyErr_SetString(PyExc_ValueError, "entry_columns: an element or shard out of range");
            goto done;
        }
        /* (the columns' lengths are checked above: set, each dropping the item it replaces) */
        PyList_SetItem(column[0], start + i, Py_NewRef(PyList_GET_ITEM(dtypes, element)));
        PyList_SetItem(column[1], start + i, Py_NewRef(PyList_GET_ITEM(shapes, i)));
        PyList_SetItem(column[2], start + i, Py_NewRef(PyList_GET_ITEM(type_names, element)));
        PyList_SetItem(column[3], start + i, Py_NewRef(PyList_GET_ITEM(files, shard)));
        sum[i] = row[5];
        shard_at[i] = shard;
        offset_at[i] = row[3];
        stored_at[i] = plain ? row[4] : 0;
        size_at[i] = row[4];
        if (!plain) {
            PyObject *index = PyLong_FromSsize_t(start + i);
            int appended = index == NULL ? -1 : PyList_Append(odd, index);
            Py_XDECREF(index);
            if (appended < 0) goto done;
        }
    }
    result = Py_NewRef(odd);
done:
    Py_XDECREF(odd);
    PyBuffer_Release(&numbers);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&checked);
    return result;
}

/* -- first_overlap -------------------------------------------------------------------------------------------- */

static PyObject *first_overlap(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "first_overlap(extents, order) takes 2 arguments");
        return NULL;
    }
    Py_buffer view, sorted;
    const int64_t *items, *order;
    Py_ssize_t count, length;
    if (!int64_items(args[0], &view, &items, &count)) return NULL;
    if (!int64_items(args[1], &sorted, &order, &length)) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = view.ndim == 2 ? view.shape[1] : -1;
    if (view.ndim != 2 || view.shape[0] != 3 || length != n) {
        PyErr_SetString(PyExc_ValueError, "first_overlap: extents of 3 rows (shard, offset, size), an order of each");
        goto done;
    }
    const int64_t *shard = items, *offset = items + n, *size = items + 2 * n;
    int64_t before = -1; /* the last entry with a size, in order */
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t i = order[k];
        if (i < 0 || i >= n) {
            PyErr_SetString(PyExc_ValueError, "first_overlap: an order of the extents' indices is needed");
            goto done;
        }
        if (size[i] <= 0) continue; /* nothing stored */
        /* (the end as numpy adds it: wrapping, as no end of a checked entry does) */
        if (before >= 0 && shard[i] == shard[before] &&
            offset[i] < (int64_t)((uint64_t)offset[before] + (uint64_t)size[before])) {
            result = Py_BuildValue("(LL)", (long long)before, (long long)i);
            goto done;
        }
        before = i;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&sorted);
    return result;
}

/* -- rows ------------------------------------------------------------------------------------------------------ */

/* An iterator making rows of a tuple subclass from columns, one at a time, as map(tuple.__new__, repeat(cls),
 * zip(*columns, strict=True)) does, with one allocation a row instead of two. A column is a list, or a C-contiguous
 * int64 buffer (numpy's array) whose items become ints as each row is made: a listing then makes its sizes and
 * offsets as it goes, in memory it frees and reuses row after row, where a list holds one int object each. */
typedef struct {
    PyObject_HEAD PyTypeObject *cls;
    PyObject *columns; /* a tuple of lists and int64 buffers */
    Py_buffer *views;  /* each column's buffer (obj NULL for a list), while the rows are made */
    Py_ssize_t next, count;
} Rows;

static int rows_traverse(Rows *self, visitproc visit, void *arg) {
    Py_VISIT(self->cls);
    Py_VISIT(self->columns);
    return 0;
}

static int rows_clear(Rows *self) {
    if (self->views != NULL) {
        for (Py_ssize_t k = 0; self->columns != NULL && k < PyTuple_GET_SIZE(self->columns); k++)
            if (self->views[k].obj != NULL) PyBuffer_Release(&self->views[k]);
        PyMem_Free(self->views);
        self->views = NULL;
    }
    Py_CLEAR(self->cls);
    Py_CLEAR(self->columns);
    return 0;
}

static void rows_dealloc(Rows *self) {
    PyObject_GC_UnTrack(self);
    rows_clear(self);
    PyObject_GC_Del(self);
}

/* Column k's length: a list's now (lists may change size: checked at each row), a buffer's fixed while held. */
static Py_ssize_t column_length(Rows *self, Py_ssize_t k) {
    if (self->views[k].obj != NULL) return self->views[k].len / 8;
    return PyList_GET_SIZE(PyTuple_GET_ITEM(self->columns, k));
}

static PyObject *rows_next(Rows *self) {
    if (self->columns == NULL) return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(self->columns), i = self->next;
    for (Py_ssize_t k = 0; k < width; k++) {
        Py_ssize_t length = column_length(self, k);
        if (i < self->count ? length <= i : length > i) {
            const char *than = length <= i ? "shorter" : "longer";
            PyErr_Format(PyExc_ValueError, "rows: column %zd is %s than column 0", k, than);
            return NULL;
        }
    }
    if (i >= self->count) {
        rows_clear(self);
        return NULL;
    }
    PyObject *row = self->cls->tp_alloc(self->cls, width);
    if (row == NULL) return NULL;
    for (Py_ssize_t k = 0; k < width; k++) {
        PyObject *item;
        if (self->views[k].obj != NULL) {
            item = PyLong_FromLongLong(((const int64_t *)self->views[k].buf)[i]);
            if (item == NULL) {
                Py_DECREF(row); /* (its items not set yet are NULL: skipped) */
                return NULL;
            }
        } else {
            item = Py_NewRef(PyList_GET_ITEM(PyTuple_GET_ITEM(self->columns, k), i));
        }
        PyTuple_SET_ITEM(row, k, item);
    }
    self->next++;
    return row;
}

static PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "weightscope._tables.Rows",
    .tp_basicsize = sizeof(Rows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)rows_traverse,
    .tp_clear = (inquiry)rows_clear,
    .tp_dealloc = (destructor)rows_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)rows_next,
};

static PyObject *rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type) ||
        ((PyTypeObject *)args[0])->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "rows(cls, columns): cls must be a tuple subclass without a __dict__");
        return NULL;
    }
    PyObject *columns = PySequence_Tuple(args[1]);
    if (columns == NULL) return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(columns);
    Py_buffer *views = PyMem_Calloc((size_t)width + 1, sizeof(Py_buffer));
    if (views == NULL) {
        Py_DECREF(columns);
        return PyErr_NoMemory();
    }
    Rows *self = PyObject_GC_New(Rows, &RowsType);
    if (self == NULL) {
        PyMem_Free(views);
        Py_DECREF(columns);
        return NULL;
    }
    self->cls = (PyTypeObject *)Py_NewRef(args[0]);
    self->columns = columns;
    self->views = views;
    self->next = 0;
    for (Py_ssize_t k = 0; k < width; k++) {
        PyObject *column = PyTuple_GET_ITEM(columns, k);
        if (!PyList_Check(column) && !int64_buffer(column, &views[k])) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "rows(cls, columns): each column must be a list or an int64 array");
            Py_DECREF(self); /* (not tracked yet: its dealloc untracks nothing) */
            return NULL;
        }
        if (views[k].obj != NULL && views[k].ndim > 1) {
            PyErr_SetString(PyExc_TypeError, "rows(cls, columns): an int64 column must be one-dimensional");
            Py_DECREF(self);
            return NULL;
        }
    }
    self->count = width ? column_length(self, 0) : 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyMethodDef methods[] = {
    {"parse_blocks", (PyCFunction)(void (*)(void))parse_blocks, METH_FASTCALL,
     "parse_blocks(blocks, room) -> (keys, bounds, cost) of a table's data blocks, or None"},
    {"decode_entries", (PyCFunction)(void (*)(void))decode_entries, METH_FASTCALL,
     "decode_entries(data, starts, ends) -> (rows of 15 int64 fields, shapes) of BundleEntryProto entries, or None"},
    {"check_entries", (PyCFunction)(void (*)(void))check_entries, METH_FASTCALL,
     "check_entries(rows, element_index, itemsizes, shard_sizes) -> (element, shard, plain rows, unknown elements)"},
    {"entry_columns", (PyCFunction)(void (*)(void))entry_columns, METH_FASTCALL,
     "entry_columns(rows, checked, shapes, dtypes, type_names, files, numbers, start, columns) -> odd entries"},
    {"first_overlap", (PyCFunction)(void (*)(void))first_overlap, METH_FASTCALL,
     "first_overlap(extents, order) -> the first two entries whose bytes overlap, in order, or None"},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(cls, columns) -> an iterator of cls rows made from the columns (lists, int64 arrays), one item from each"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "weightscope._tables",
                                    "TensorFlow index tables and bundle entries, parsed (see _tables.c).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__tables(void) {
    if (PyType_Ready(&RowsType) < 0) return NULL;
    return PyModule_Create(&module);
}
