/* weightscope._headers: the JSON of a safetensors header and of a sharded set's index, parsed in one pass.
 *
 * A model folder of 200 shards and 100,000 tensors has 20 MB of JSON to read before it can list a tensor: an
 * index naming each tensor's shard, and each shard's header. Python's ``json`` builds a dict per tensor there, and
 * ``weightscope.formats.safetensors`` then a ``TensorInfo`` of each; here each file's text becomes what the readers
 * keep (the infos, the weight map) directly. It is optional, like ``_kernels``: where it is not built the readers
 * take their Python paths, and the tests hold the two equal.
 *
 * Both functions parse a strict subset of JSON, as the writers lay it out, and give None for anything else (a
 * string with an escape or a control character, another order of fields, a name given twice...): the caller then
 * parses the text with ``json`` and checks it as before, so a hostile text gets the same message either way. Every
 * read is bounded by the text's end, every number by 64 bits.
 *
 * compact_header(text, kinds, info, file, start, size) -> (metadata, infos, ordered) | None
 *     ``text`` a header as the reference writer makes it (``{"__metadata__":{...},"name":{"dtype":"F32",
 *     "shape":[2,3],"data_offsets":[0,24]},...}`` then spaces): each tensor's code a key of ``kinds`` (code ->
 *     (dtype, item size, element type's name)), no dimension 0, at most 64 of them, and the tensors tiling the data
 *     buffer from ``start`` to ``size`` in the order listed, no name given twice. ``infos`` maps each name, in the
 *     header's order, to its ``info`` tuple (name, dtype, shape, nbytes, type name, ``file``, offset in the file,
 *     name); ``ordered``: whether that order is the names' (Python's sort of strs).
 * string_map(text, key) -> (begin, end, map) | None
 *     The member ``key`` of the JSON object ``text``, where its value is an object of strings (an index's
 *     ``weight_map``): the value's span ``text[begin:end]`` and the dict it holds. The rest of the text is not
 *     checked here: the caller parses it with that span taken out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const char *at, *end;
} Cursor;

static int literal(Cursor *c, const char *text, size_t length) {
    if ((size_t)(c->end - c->at) < length || memcmp(c->at, text, length) != 0)
        return 0;
    c->at += length;
    return 1;
}
#define LITERAL(CURSOR, TEXT) literal(CURSOR, TEXT, sizeof(TEXT) - 1)

static int next_is(const Cursor *c, char byte) { return c->at < c->end && *c->at == byte; }

static void skip_space(Cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\n' || *c->at == '\r' || *c->at == '\t'))
        c->at++;
}

/* A string's bytes between its quotes, and whether they are all ASCII. */
typedef struct {
    const char *text;
    Py_ssize_t length;
    int ascii;
} String;

/* A string with no escape and no control character. The closing quote found by memchr, then the bytes before it
 * tested in one branch-free loop (it vectorises). */
static int plain_string(Cursor *c, String *string) {
    if (!next_is(c, '"'))
        return 0;
    const char *first = c->at + 1, *last = memchr(first, '"', c->end - first);
    if (last == NULL)
        return 0;
    unsigned char odd = 0, high = 0;
    for (const unsigned char *at = (const unsigned char *)first; at < (const unsigned char *)last; at++) {
        odd |= (unsigned char)((*at < 0x20) | (*at == '\\'));
        high |= *at;
    }
    if (odd)
        return 0;
    *string = (String){first, last - first, high < 0x80};
    c->at = last + 1;
    return 1;
}

/* JSON's non-negative integer (no sign, no leading zero), under 2**64. */
static int natural(Cursor *c, uint64_t *value) {
    if (c->at == c->end || *c->at < '0' || *c->at > '9')
        return 0;
    if (*c->at == '0') {
        c->at++;
        *value = 0;
        return !(c->at < c->end && *c->at >= '0' && *c->at <= '9');
    }
    uint64_t number = 0;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9') {
        unsigned digit = (unsigned)(*c->at - '0');
        if (number > (UINT64_MAX - digit) / 10)
            return 0;
        number = number * 10 + digit;
        c->at++;
    }
    *value = number;
    return 1;
}

/* The str of a string's UTF-8 bytes (ASCII copied as it is); NULL, the error cleared, where they are not UTF-8. */
static PyObject *text_of(const String *string) {
    if (string->ascii) {
        PyObject *text = PyUnicode_New(string->length, 127);
        if (text != NULL)
            memcpy(PyUnicode_DATA(text), string->text, string->length);
        return text;
    }
    PyObject *text = PyUnicode_DecodeUTF8(string->text, string->length, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear();
    return text;
}

/* -- compact_header ----------------------------------------------------------------------------------------- */

#define MAX_RANK 64 /* numpy's */
#define KINDS 16    /* the (code, shape) pairs remembered: a shard mostly repeats a few */

typedef struct {
    String code;
    int rank;
    uint64_t dims[MAX_RANK];
    PyObject *dtype, *type_name; /* borrowed from ``kinds`` */
    PyObject *shape, *nbytes;    /* owned */
    uint64_t bytes;
    int atomic; /* the dtype is not tracked by the garbage collector: an info of it need not be either */
} Kind;

typedef struct {
    Kind kinds[KINDS];
    int count, next;
} Kinds;

static void kinds_clear(Kinds *known) {
    for (int i = 0; i < known->count; i++) {
        Py_CLEAR(known->kinds[i].shape);
        Py_CLEAR(known->kinds[i].nbytes);
    }
}

/* The kind of a tensor of ``code`` and ``dims``: remembered, or made from ``table`` (code -> (dtype, item size,
 * type name)). NULL with no error where the code is not in the table or the bytes overflow; NULL with an error
 * where Python failed. */
static Kind *kind_of(Kinds *known, PyObject *table, const String *code, int rank, const uint64_t *dims) {
    for (int i = 0; i < known->count; i++) {
        Kind *kind = &known->kinds[i];
        if (kind->rank == rank && kind->code.length == code->length &&
            memcmp(kind->code.text, code->text, code->length) == 0 &&
            memcmp(kind->dims, dims, rank * sizeof(uint64_t)) == 0)
            return kind;
    }
    PyObject *key = text_of(code);
    if (key == NULL)
        return NULL;
    PyObject *row = PyDict_GetItemWithError(table, key); /* borrowed */
    Py_DECREF(key);
    if (row == NULL || !PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 3)
        return NULL;
    uint64_t bytes = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(row, 1));
    if (PyErr_Occurred())
        return NULL;
    for (int i = 0; i < rank; i++)
        if (__builtin_mul_overflow(bytes, dims[i], &bytes))
            return NULL;
    PyObject *shape = PyTuple_New(rank), *nbytes = PyLong_FromUnsignedLongLong(bytes);
    for (int i = 0; shape != NULL && i < rank; i++) {
        PyObject *dim = PyLong_FromUnsignedLongLong(dims[i]);
        if (dim == NULL)
            Py_CLEAR(shape);
        else
            PyTuple_SET_ITEM(shape, i, dim);
    }
    if (shape == NULL || nbytes == NULL) {
        Py_XDECREF(shape);
        Py_XDECREF(nbytes);
        return NULL;
    }
    PyObject_GC_UnTrack(shape); /* of ints: no cycle through it */
    Kind *kind = &known->kinds[known->next];
    if (known->count < KINDS)
        known->count++;
    else {
        Py_CLEAR(kind->shape);
        Py_CLEAR(kind->nbytes);
    }
    known->next = (known->next + 1) % KINDS;
    PyObject *dtype = PyTuple_GET_ITEM(row, 0);
    *kind = (Kind){*code, rank, {0}, dtype, PyTuple_GET_ITEM(row, 2), shape, nbytes, bytes,
                   !(PyObject_IS_GC(dtype) && PyObject_GC_IsTracked(dtype))};
    memcpy(kind->dims, dims, rank * sizeof(uint64_t));
    return kind;
}

/* ``__metadata__`` at the head of the header, if there: its map of strings, the cursor after its ','. 1 where
 * done (or there is none), 0 where the head is anything else (the caller's None), -1 where Python failed. */
static int leading_metadata(Cursor *c, PyObject *metadata) {
    if (!LITERAL(c, "\"__metadata__\":{") || LITERAL(c, "},"))
        return 1;
    for (;;) {
        String key, value;
        if (!plain_string(c, &key) || !LITERAL(c, ":") || !plain_string(c, &value))
            return 0;
        PyObject *name = text_of(&key);
        if (name == NULL)
            return PyErr_Occurred() ? -1 : 0;
        int given = PyDict_Contains(metadata, name);
        PyObject *text = given ? NULL : text_of(&value);
        int stored = text == NULL ? -1 : PyDict_SetItem(metadata, name, text);
        Py_DECREF(name);
        Py_XDECREF(text);
        if (given || stored < 0)
            return given < 0 || PyErr_Occurred() ? -1 : 0; /* a key given twice: json's path names it */
        if (LITERAL(c, "},"))
            return 1;
        if (!LITERAL(c, ","))
            return 0;
    }
}

/* One tensor's entry after its name; 0 where it is laid out otherwise. */
static int entry_fields(Cursor *c, String *code, int *rank, uint64_t *dims, uint64_t *begin, uint64_t *end) {
    if (!LITERAL(c, ":{\"dtype\":") || !plain_string(c, code) || !LITERAL(c, ",\"shape\":["))
        return 0;
    *rank = 0;
    if (!LITERAL(c, "]")) {
        do {
            if (*rank == MAX_RANK || !natural(c, &dims[*rank]) || dims[*rank] == 0)
                return 0; /* a dimension 0: check_size's case, on the json path */
            ++*rank;
        } while (LITERAL(c, ","));
        if (!LITERAL(c, "]"))
            return 0;
    }
    return LITERAL(c, ",\"data_offsets\":[") && natural(c, begin) && LITERAL(c, ",") && natural(c, end) &&
           LITERAL(c, "]}");
}

/* The info of a tensor ``name`` of ``kind`` at ``offset`` in ``file``: a new reference, or NULL. */
static PyObject *info_of(PyTypeObject *info_type, PyObject *name, const Kind *kind, PyObject *file,
                         uint64_t offset) {
    PyObject *info = info_type->tp_alloc(info_type, 8), *at = PyLong_FromUnsignedLongLong(offset);
    if (info == NULL || at == NULL) {
        Py_XDECREF(info);
        Py_XDECREF(at);
        return NULL;
    }
    PyObject *fields[8] = {Py_NewRef(name), Py_NewRef(kind->dtype), Py_NewRef(kind->shape),
                           Py_NewRef(kind->nbytes), Py_NewRef(kind->type_name), Py_NewRef(file), at,
                           Py_NewRef(name)};
    for (int i = 0; i < 8; i++)
        PyTuple_SET_ITEM(info, i, fields[i]);
    if (kind->atomic)
        PyObject_GC_UnTrack(info); /* strs, ints, an untracked dtype, a tuple of ints: no cycle through it */
    return info;
}

/* Whether the UTF-8 ``text`` sorts before ``after``: bytes compare as their code points, and so as Python's
 * strs. */
static int before(const String *text, const String *after) {
    int order = memcmp(text->text, after->text, text->length < after->length ? text->length : after->length);
    return order < 0 || (order == 0 && text->length < after->length);
}

static PyObject *compact_header(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Py_ssize_t start, size;
    if (nargs != 6 || !PyBytes_Check(args[0]) || !PyDict_Check(args[1]) || !PyType_Check(args[2]) ||
        !PyType_IsSubtype((PyTypeObject *)args[2], &PyTuple_Type) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "compact_header(text: bytes, kinds: dict, info: tuple type, file: str, "
                                         "start: int, size: int)");
        return NULL;
    }
    PyTypeObject *info_type = (PyTypeObject *)args[2];
    if (info_type->tp_basicsize != PyTuple_Type.tp_basicsize || info_type->tp_itemsize != sizeof(PyObject *)) {
        PyErr_SetString(PyExc_TypeError, "compact_header: info must be a tuple type with no fields of its own");
        return NULL;
    }
    if ((start = PyLong_AsSsize_t(args[4])) < 0 || (size = PyLong_AsSsize_t(args[5])) < start)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    uint64_t room = (uint64_t)(size - start); /* the data buffer's bytes */
    Cursor c = {PyBytes_AS_STRING(args[0]), PyBytes_AS_STRING(args[0]) + PyBytes_GET_SIZE(args[0])};
    while (c.end > c.at && c.end[-1] == ' ') /* the writer's padding */
        c.end--;
    PyObject *metadata = PyDict_New(), *infos = PyDict_New(), *result = NULL;
    Kinds known = {.count = 0, .next = 0};
    Py_ssize_t count = 0;
    int ordered = 1, head = -1; /* -1: Python failed; 0: not the compact layout; 1: tensors follow */
    if (metadata != NULL && infos != NULL)
        head = LITERAL(&c, "{") ? leading_metadata(&c, metadata) : 0;
    uint64_t position = 0, dims[MAX_RANK];
    String name, previous = {NULL, 0, 1};
    while (head == 1) {
        String code;
        int rank;
        uint64_t begin, end;
        if (!plain_string(&c, &name) || (name.length == 12 && memcmp(name.text, "__metadata__", 12) == 0) ||
            !entry_fields(&c, &code, &rank, dims, &begin, &end) || begin != position)
            break;
        Kind *kind = kind_of(&known, args[1], &code, rank, dims);
        if (kind == NULL || end < begin || end - begin != kind->bytes || end > room)
            break;
        position = end;
        PyObject *text = text_of(&name);
        PyObject *info = text == NULL ? NULL : info_of(info_type, text, kind, args[3], (uint64_t)start + begin);
        int stored = info == NULL ? -1 : PyDict_SetItem(infos, text, info);
        Py_XDECREF(text);
        Py_XDECREF(info);
        if (stored < 0)
            break;
        ordered &= count == 0 || before(&previous, &name);
        previous = name;
        count++;
        if (!LITERAL(&c, ",")) {
            if (LITERAL(&c, "}") && c.at == c.end && position == room && PyDict_GET_SIZE(infos) == count)
                result = Py_BuildValue("OOO", metadata, infos, ordered ? Py_True : Py_False);
            break;
        }
    }
    if (result == NULL && !PyErr_Occurred())
        result = Py_NewRef(Py_None); /* laid out otherwise, or a check failed: json's path names what */
    kinds_clear(&known);
    Py_XDECREF(metadata);
    Py_XDECREF(infos);
    return result;
}

/* -- string_map --------------------------------------------------------------------------------------------- */

/* Past any JSON string (escapes skipped, not decoded). */
static int any_string(Cursor *c) {
    if (!next_is(c, '"'))
        return 0;
    for (c->at++; c->at < c->end; c->at++) {
        if (*c->at == '\\')
            c->at++;
        else if (*c->at == '"') {
            c->at++;
            return 1;
        }
    }
    return 0;
}

static int scalar_byte(char byte) { return byte != '\0' && strchr(" \t\r\n,:[]{}\"", byte) == NULL; }

/* Past one JSON value, as far as its brackets and strings show: the caller's parse checks the rest. */
static int any_value(Cursor *c) {
    Py_ssize_t depth = 0;
    do {
        skip_space(c);
        if (c->at == c->end)
            return 0;
        switch (*c->at) {
        case '"':
            if (!any_string(c))
                return 0;
            break;
        case '{':
        case '[':
            depth++;
            c->at++;
            break;
        case '}':
        case ']':
            if (depth-- == 0)
                return 0;
            c->at++;
            break;
        case ',':
        case ':':
            if (depth == 0)
                return 0;
            c->at++;
            break;
        default: /* a number, true, false, null: up to what ends it (the caller's parse checks it) */
            if (!scalar_byte(*c->at))
                return 0;
            while (c->at < c->end && scalar_byte(*c->at))
                c->at++;
        }
    } while (depth > 0);
    return 1;
}

#define VALUES 1024 /* the strings remembered, by a hash of their bytes: an index's values are its shards' names */

typedef struct {
    const char *text;
    Py_ssize_t length;
    PyObject *value; /* a reference of its own: a key given twice may drop the dict's */
} Seen;

/* The str of a value's bytes: one made before for the same bytes, or a new one remembered in its slot. */
static PyObject *value_of(Seen *seen, const String *text) {
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < text->length; i++)
        hash = (hash ^ (unsigned char)text->text[i]) * 16777619u;
    Seen *slot = &seen[hash % VALUES];
    if (slot->value != NULL && slot->length == text->length && memcmp(slot->text, text->text, text->length) == 0)
        return Py_NewRef(slot->value);
    PyObject *value = text_of(text);
    if (value != NULL) {
        Py_XSETREF(slot->value, Py_NewRef(value));
        slot->text = text->text, slot->length = text->length;
    }
    return value;
}

/* The object of strings at the cursor as a dict; None where it is anything else, or names a key twice. */
static PyObject *strings_object(Cursor *c) {
    Seen *seen = PyMem_Calloc(VALUES, sizeof(Seen));
    if (seen == NULL)
        return PyErr_NoMemory();
    Py_ssize_t pairs = 0;
    PyObject *map = PyDict_New();
    if (map == NULL || !LITERAL(c, "{"))
        goto other;
    skip_space(c);
    if (LITERAL(c, "}"))
        goto done;
    for (;;) {
        String key, text;
        skip_space(c);
        if (!plain_string(c, &key))
            goto other;
        skip_space(c);
        if (!LITERAL(c, ":"))
            goto other;
        skip_space(c);
        if (!plain_string(c, &text))
            goto other;
        PyObject *value = value_of(seen, &text);
        PyObject *name = value == NULL ? NULL : text_of(&key);
        int stored = name == NULL ? -1 : PyDict_SetItem(map, name, value);
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (stored < 0)
            goto other;
        pairs++;
        skip_space(c);
        if (LITERAL(c, "}"))
            break;
        if (!LITERAL(c, ","))
            goto other;
    }
    if (PyDict_GET_SIZE(map) == pairs)
        goto done;
other: /* json's path parses it, and names what is wrong */
    Py_CLEAR(map);
    map = PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
done:
    for (int i = 0; i < VALUES; i++)
        Py_XDECREF(seen[i].value);
    PyMem_Free(seen);
    return map;
}

static PyObject *string_map(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Py_ssize_t key_length;
    const char *key;
    if (nargs != 2 || !PyBytes_Check(args[0]) || (key = PyUnicode_AsUTF8AndSize(args[1], &key_length)) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "string_map(text: bytes, key: str)");
        return NULL;
    }
    const char *first = PyBytes_AS_STRING(args[0]);
    Cursor c = {first, first + PyBytes_GET_SIZE(args[0])};
    skip_space(&c);
    if (!LITERAL(&c, "{"))
        Py_RETURN_NONE;
    do {
        skip_space(&c);
        const char *name = c.at + 1;
        if (!any_string(&c))
            Py_RETURN_NONE;
        int found = c.at - 1 - name == key_length && memcmp(name, key, key_length) == 0;
        skip_space(&c);
        if (!LITERAL(&c, ":"))
            Py_RETURN_NONE;
        skip_space(&c);
        if (found) {
            Py_ssize_t begin = c.at - first;
            PyObject *map = strings_object(&c);
            if (map == NULL || map == Py_None)
                return map;
            return Py_BuildValue("nnN", begin, (Py_ssize_t)(c.at - first), map);
        }
        if (!any_value(&c))
            Py_RETURN_NONE;
        skip_space(&c);
    } while (LITERAL(&c, ","));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"compact_header", (PyCFunction)(void (*)(void))compact_header, METH_FASTCALL,
     "compact_header(text, kinds, info, file, start, size) -> (metadata, names, infos) of a compact safetensors "
     "header, or None"},
    {"string_map", (PyCFunction)(void (*)(void))string_map, METH_FASTCALL,
     "string_map(text, key) -> (begin, end, dict) of the member key of a JSON object, an object of strings, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "weightscope._headers",
                                    "JSON headers and indexes parsed in one pass (see _headers.c).", -1, methods};

PyMODINIT_FUNC PyInit__headers(void) { return PyModule_Create(&module); }
