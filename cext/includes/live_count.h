/* Counts of the objects of a few extension types made and freed, kept by
 * the types' tp_alloc and tp_free slots: a type with a __dealloc__ of its
 * own pays for saving and restoring the current exception around it at
 * every deallocation, these slots pay two increments. */
#ifndef TW_LIVE_COUNT_H
#define TW_LIVE_COUNT_H

#include <Python.h>

#define TW_COUNTED_TYPES 4

static Py_ssize_t tw_made[TW_COUNTED_TYPES];
static Py_ssize_t tw_freed[TW_COUNTED_TYPES];
static allocfunc tw_alloc_of[TW_COUNTED_TYPES];
static freefunc tw_free_of[TW_COUNTED_TYPES];

#define TW_COUNTING_SLOTS(i)                                              \
    static PyObject *tw_alloc_##i(PyTypeObject *t, Py_ssize_t n)          \
    {                                                                     \
        PyObject *o = tw_alloc_of[i](t, n);                               \
        if (o != NULL)                                                    \
            tw_made[i]++;                                                 \
        return o;                                                         \
    }                                                                     \
    static void tw_free_##i(void *o)                                      \
    {                                                                     \
        tw_freed[i]++;                                                    \
        tw_free_of[i](o);                                                 \
    }

TW_COUNTING_SLOTS(0)
TW_COUNTING_SLOTS(1)
TW_COUNTING_SLOTS(2)
TW_COUNTING_SLOTS(3)

/* Count the objects of type t as kind i (0 <= i < TW_COUNTED_TYPES), from
 * now on. Its subclasses made in Python have slots of their own and are
 * not counted. Returns -1 for a kind out of range or counted already. */
static int tw_count_type(PyTypeObject *t, int i)
{
    static allocfunc allocs[TW_COUNTED_TYPES] = {tw_alloc_0, tw_alloc_1, tw_alloc_2, tw_alloc_3};
    static freefunc frees[TW_COUNTED_TYPES] = {tw_free_0, tw_free_1, tw_free_2, tw_free_3};
    if (i < 0 || i >= TW_COUNTED_TYPES || tw_alloc_of[i] != NULL)
        return -1;
    tw_alloc_of[i] = t->tp_alloc ? t->tp_alloc : PyType_GenericAlloc;
    tw_free_of[i] = t->tp_free ? t->tp_free : PyObject_Free;
    t->tp_alloc = allocs[i];
    t->tp_free = frees[i];
    return 0;
}

#endif
