/* _cstr_native: the compiled hot path of the CSTR sample (examples/cstr/sim.py).
 *
 * sim.py is the documented algorithm; this file is the same algorithm in C, operation for
 * operation, so that both paths give bit-identical results (tests/test_cstr_native.py checks
 * it). Every floating-point expression below keeps the Python code's evaluation order: IEEE
 * addition is not associative, so a reordered sum would drift from the pure path by ulps that
 * the unstable high-conversion operating point then amplifies. Build without -ffast-math and
 * with -ffp-contract=off (setup.py does): a fused multiply-add rounds once where Python rounds
 * twice.
 *
 * What is in C: the whole control step (action parsing, references, noise draws through the
 * instance's random.Random, the adaptive Taylor integration of every sub-interval including
 * the shortened steps and their failure checks, the KPI, the returned state dict) and
 * termination()/truncation(). What stays in Python: reset() (config validation and the
 * reference schedule), which hands its results to Core.load().
 *
 * Errors are the Python path's: ZeroDivisionError at Tr = 0, OverflowError where math.exp or
 * ** overflow, ArithmeticError when a step cannot be completed (a non-finite state).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>

/* Bumped whenever the algorithm changes; sim.py refuses a build with another number (a stale
 * install would otherwise give results that differ from the pure path). */
#define CSTR_NATIVE_VERSION 1

/* Process constants, as in sim.py (each folded at compile time with correct rounding, as
 * Python folds or computes them at import). */
static const double K0 = 34930800.0;
static const double E_R = 11843.0 / 1.98588;
static const double CAF = 10.0;
static const double TF = 298.2;
static const double BETA = 150.0 / 500.0;
static const double G = 1.0 + 150.0 / 500.0;
static const double Q = -5960.0 / 500.0;

static const double RTOL = 1e-8;
static const double ATOL_C = 1e-8;
static const double ATOL_T = 1e-6;
#define MAX_PIECES 100000L

static const double C_LOW = 8.5698, T_LOW = 311.2612;
static const double C_HIGH = 2.0, T_HIGH = 373.1311;
#define PREVIEW 5.0

#define ORDER 12

/* 1/n and -1/n, as sim.py's literals (1.0 / n) and (-1.0 / n). */
static const double INV[ORDER + 1] = {
    0.0,        1.0,        1.0 / 2.0,  1.0 / 3.0,  1.0 / 4.0,  1.0 / 5.0,  1.0 / 6.0,
    1.0 / 7.0,  1.0 / 8.0,  1.0 / 9.0,  1.0 / 10.0, 1.0 / 11.0, 1.0 / 12.0,
};
static const double NEG_INV[ORDER + 1] = {
    0.0,         -1.0,        -1.0 / 2.0,  -1.0 / 3.0,  -1.0 / 4.0,  -1.0 / 5.0,  -1.0 / 6.0,
    -1.0 / 7.0,  -1.0 / 8.0,  -1.0 / 9.0,  -1.0 / 10.0, -1.0 / 11.0, -1.0 / 12.0,
};

/* The exponents are volatile so that the compiler calls libm's pow as Python's float ** does:
 * gcc would otherwise turn pow(x, 2.0) into x * x, which may round differently. */
static volatile double POW_TWO = 2.0;
static volatile double POW_12 = 1.0 / 12.0;
static volatile double POW_11 = 1.0 / 11.0;

/* Python's math.exp: OverflowError when a finite argument overflows. */
static int
py_exp(double x, double *out)
{
    double r = exp(x);
    if (isinf(r) && isfinite(x)) {
        PyErr_SetString(PyExc_OverflowError, "math range error");
        return -1;
    }
    *out = r;
    return 0;
}

/* One Taylor step of the CSTR ODE from (c0, t0) with coolant forcing p over h: sim.py's
 * _taylor_step. Stores the state after the step and the fraction of h it covers (1.0 when the
 * series converged over all of h). Returns -1 with a Python exception set on the errors
 * Python's float arithmetic raises there. */
static int
taylor_step(double c0, double t0, double p, double h, double *c_out, double *t_out,
            double *frac_out)
{
    /* c = Cr, t = Tr, s = psi, g = n psi_n, e = k, r = rA; index n is the order. */
    double c[ORDER + 1], t[ORDER + 1], s[ORDER + 1], g[ORDER + 1], e[ORDER + 1], r[ORDER + 1];
    double mu, ex, tol_c, tol_t, ntol_c, ntol_t, acc, q;
    int n, j;

    if (t0 == 0.0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "float division by zero");
        return -1;
    }
    mu = -1.0 / t0;
    if (py_exp(E_R * mu, &ex) < 0) {
        return -1;
    }
    c[0] = c0;
    t[0] = t0;
    e[0] = K0 * ex;
    s[0] = E_R * mu;
    r[0] = e[0] * c0;
    c[1] = (c0 + r[0] - CAF) * -h;
    t[1] = (G * t0 + Q * r[0] - p) * -h;
    tol_c = ATOL_C + RTOL * c0;
    tol_t = ATOL_T + RTOL * t0;
    ntol_c = -tol_c;
    ntol_t = -tol_t;

    /* Pass n computes psi_n, k_n, rA_n and the order n+1 terms of Cr and Tr. */
    for (n = 1; n < ORDER; n++) {
        acc = t[1] * s[n - 1];
        for (j = 2; j <= n; j++) {
            acc += t[j] * s[n - j];
        }
        s[n] = acc * mu;
        g[n] = n == 1 ? s[1] : (double)n * s[n];
        acc = g[1] * e[n - 1];
        for (j = 2; j <= n; j++) {
            acc += g[j] * e[n - j];
        }
        e[n] = n == 1 ? acc : acc * INV[n];
        acc = e[0] * c[n];
        for (j = 1; j <= n; j++) {
            acc += e[j] * c[n - j];
        }
        r[n] = acc;
        q = h * NEG_INV[n + 1];
        c[n + 1] = (c[n] + r[n]) * q;
        t[n + 1] = (G * t[n] + Q * r[n]) * q;
        /* sim.py tests convergence after orders 2 and 4..12 (not 3): the last two terms. */
        if (n + 1 != 3 && ntol_c <= c[n + 1] && c[n + 1] <= tol_c && ntol_t <= t[n + 1] &&
            t[n + 1] <= tol_t && ntol_c <= c[n] && c[n] <= tol_c && ntol_t <= t[n] &&
            t[n] <= tol_t) {
            double cs = c[0], ts = t[0];
            for (j = 1; j <= n + 1; j++) {
                cs += c[j];
            }
            for (j = 1; j <= n + 1; j++) {
                ts += t[j];
            }
            *c_out = cs;
            *t_out = ts;
            *frac_out = 1.0;
            return 0;
        }
    }

    /* Not converged over h: shorten the step so the last two terms meet the tolerance. */
    if (tol_c < 0.0 || tol_t < 0.0) {
        /* sim.py: far below zero no step length meets the tolerance; _finish then raises. */
        *c_out = c0;
        *t_out = t0;
        *frac_out = NAN;
        return 0;
    }
    {
        /* min() of the four as Python's builtin computes it: a NaN first stays, a later one
         * is skipped. */
        double f = pow(tol_c / (fabs(c[12]) + 1e-300), POW_12);
        double cand = pow(tol_t / (fabs(t[12]) + 1e-300), POW_12);
        double cr, tr;
        if (cand < f) {
            f = cand;
        }
        cand = pow(tol_c / (fabs(c[11]) + 1e-300), POW_11);
        if (cand < f) {
            f = cand;
        }
        cand = pow(tol_t / (fabs(t[11]) + 1e-300), POW_11);
        if (cand < f) {
            f = cand;
        }
        f = 0.9 * f;
        cr = c[ORDER];
        tr = t[ORDER];
        for (j = ORDER - 1; j >= 0; j--) {
            cr = cr * f + c[j];
            tr = tr * f + t[j];
        }
        *c_out = cr;
        *t_out = tr;
        *frac_out = f;
    }
    return 0;
}

static void
integration_failed(double c, double t)
{
    PyObject *co = PyFloat_FromDouble(c);
    PyObject *to = PyFloat_FromDouble(t);
    if (co != NULL && to != NULL) {
        PyErr_Format(PyExc_ArithmeticError, "CSTR integration failed at Cr=%R, Tr=%R", co, to);
    }
    Py_XDECREF(co);
    Py_XDECREF(to);
}

/* One sub-interval of length h from (*c, *t): a Taylor step, completed by shorter ones while
 * it covered only part of h (sim.py's step() + _finish). */
static int
integrate(double *c, double *t, double p, double h)
{
    double frac;
    long pieces = 1;
    if (taylor_step(*c, *t, p, h, c, t, &frac) < 0) {
        return -1;
    }
    while (frac != 1.0) {
        /* Taylor coefficients are NaN from a non-finite state; never loop on those. */
        if (!(0.0 < frac && frac < 1.0) || pieces >= MAX_PIECES) {
            integration_failed(*c, *t);
            return -1;
        }
        h -= frac * h;
        if (taylor_step(*c, *t, p, h, c, t, &frac) < 0) {
            return -1;
        }
        pieces++;
    }
    return 0;
}

/* ------------------------------------------------------------------------------ Core */

/* The state names, in sim.py's CSTR.state_names order. */
enum {
    S_CR_NO_NOISE,
    S_TR_NO_NOISE,
    S_CR,
    S_TR,
    S_TC,
    S_CREF,
    S_TREF,
    S_TC_ADJUST,
    S_KPI,
    S_CREF_NEXT,
    S_TREF_NEXT,
    S_CREF_PREVIEW,
    S_TREF_PREVIEW,
    N_STATES
};
static const char *STATE_NAMES[N_STATES] = {
    "Cr_no_noise", "Tr_no_noise", "Cr", "Tr", "Tc", "Cref", "Tref", "Tc_adjust",
    "kpi_rms_conc_error", "Cref_next", "Tref_next", "Cref_preview", "Tref_preview",
};
static PyObject *state_keys[N_STATES]; /* interned */
/* A dict with every state name (values None): copying it and replacing the values builds the
 * returned dict without resizes or key hashing. */
static PyObject *state_template;
static PyObject *action_key; /* "Tc_adjust" */

typedef struct {
    PyObject_HEAD
    PyObject *random; /* the instance's random.Random().random */
    /* Episode constants, from reset(). */
    double step_time, h, max_adjust, c_noise, t_noise;
    int noisy;
    long long n_its;
    double shift, p1, p2, c_slope, t_slope;
    /* Episode state. */
    double tc, cr, tr, cr_meas, tr_meas, cref, tref, time, rms, adjust;
} CoreObject;

/* sim.py's CSTR._references: (Cref, Tref) at a time of the episode. */
static inline void
references(const CoreObject *self, double time, double *cref, double *tref)
{
    double k = time + self->shift;
    if (k <= self->p1) {
        *cref = C_LOW;
        *tref = T_LOW;
    }
    else if (k <= self->p2) {
        k -= self->p1;
        *cref = self->c_slope * k + C_LOW;
        *tref = self->t_slope * k + T_LOW;
    }
    else {
        *cref = C_HIGH;
        *tref = T_HIGH;
    }
}

static PyObject *
build_states(const CoreObject *self)
{
    double v[N_STATES];
    PyObject *d;
    int i;
    v[S_CR_NO_NOISE] = self->cr;
    v[S_TR_NO_NOISE] = self->tr;
    v[S_CR] = self->cr_meas;
    v[S_TR] = self->tr_meas;
    v[S_TC] = self->tc;
    v[S_CREF] = self->cref;
    v[S_TREF] = self->tref;
    v[S_TC_ADJUST] = self->adjust;
    v[S_KPI] = self->rms;
    references(self, self->time, &v[S_CREF_NEXT], &v[S_TREF_NEXT]);
    references(self, self->time + PREVIEW * self->step_time, &v[S_CREF_PREVIEW],
               &v[S_TREF_PREVIEW]);
    d = PyDict_Copy(state_template);
    if (d == NULL) {
        return NULL;
    }
    for (i = 0; i < N_STATES; i++) {
        PyObject *x = PyFloat_FromDouble(v[i]);
        if (x == NULL || PyDict_SetItem(d, state_keys[i], x) < 0) {
            Py_XDECREF(x);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(x);
    }
    return d;
}

/* amplitude * U(-1, 1) from the instance's generator, as sim.py draws it. */
static int
draw_noise(CoreObject *self, double amplitude, double *out)
{
    PyObject *u = PyObject_CallNoArgs(self->random);
    double x;
    if (u == NULL) {
        return -1;
    }
    x = PyFloat_AsDouble(u);
    Py_DECREF(u);
    if (x == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *out = amplitude * (2.0 * x - 1.0);
    return 0;
}

PyDoc_STRVAR(Core_step_doc,
             "step($self, action, /)\n--\n\n"
             "Move the coolant by action[\"Tc_adjust\"] (K) and advance one control step.");

static PyObject *
Core_step(CoreObject *self, PyObject *action)
{
    PyObject *value;
    double adjust, cap, time, cref, tref, c_noise, t_noise, tc, h, forcing, cr, tr;
    double new_tc, quotient, before, count, d, d2, rms;
    long long i;

    value = PyObject_GetItem(action, action_key);
    if (value == NULL) {
        return NULL;
    }
    if (value == Py_None) {
        adjust = 0.0;
    }
    else if (PyFloat_CheckExact(value)) {
        adjust = PyFloat_AS_DOUBLE(value);
    }
    else {
        /* float(value), exactly as sim.py converts it (ints, numpy scalars, strings). */
        PyObject *f = PyObject_CallOneArg((PyObject *)&PyFloat_Type, value);
        if (f == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        adjust = PyFloat_AS_DOUBLE(f);
        Py_DECREF(f);
    }
    Py_DECREF(value);
    cap = self->max_adjust;
    if (adjust > cap) {
        adjust = cap;
    }
    else if (adjust < -cap) {
        adjust = -cap;
    }
    else if (adjust != adjust) { /* NaN: no move, as in the reference */
        adjust = 0.0;
    }

    /* References at the time before the step. */
    time = self->time;
    references(self, time, &cref, &tref);

    /* Noise is drawn before the plant moves, Cr first (the reference's order). */
    if (self->noisy) {
        if (self->random == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "Core.step: the core was never initialised");
            return NULL;
        }
        if (draw_noise(self, self->c_noise, &c_noise) < 0 ||
            draw_noise(self, self->t_noise, &t_noise) < 0) {
            return NULL;
        }
    }
    else {
        c_noise = t_noise = 0.0;
    }

    /* First sub-interval at the new coolant temperature, the others at the old one. */
    tc = self->tc;
    h = self->h;
    cr = self->cr;
    tr = self->tr;
    forcing = TF + BETA * (tc + adjust);
    if (integrate(&cr, &tr, forcing, h) < 0) {
        return NULL;
    }
    if (self->n_its > 1) {
        forcing = TF + BETA * tc;
        for (i = 1; i < self->n_its; i++) {
            if (integrate(&cr, &tr, forcing, h) < 0) {
                return NULL;
            }
        }
    }
    new_tc = tc + adjust;
    adjust = new_tc - tc; /* the change actually applied, as the reference reports it */
    time += self->step_time;

    /* Running RMS of the noise-free concentration error: sim.py's int() and ** 2. */
    quotient = trunc(time / self->step_time);
    before = quotient > 1.0 ? quotient - 1.0 : 0.0;
    count = quotient > 1.0 ? quotient : 1.0;
    d = cr - cref;
    errno = 0;
    d2 = pow(d, POW_TWO);
    if (isinf(d2) && isfinite(d)) {
        errno = ERANGE;
        return PyErr_SetFromErrno(PyExc_OverflowError);
    }
    rms = self->rms;
    rms = sqrt((rms * rms * before + d2) / count);

    self->tc = new_tc;
    self->adjust = adjust;
    self->cr = cr;
    self->tr = tr;
    self->cr_meas = cr + c_noise;
    self->tr_meas = tr + t_noise;
    self->cref = cref;
    self->tref = tref;
    self->time = time;
    self->rms = rms;
    return build_states(self);
}

PyDoc_STRVAR(Core_termination_doc,
             "termination($self, /)\n--\n\n"
             "Runaway (measured Tr >= 400), measured Cr <= 0, an impossible move, or Tc < 50.");

static PyObject *
Core_termination(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->tr_meas >= 400.0 || self->cr_meas <= 0.0 ||
                           fabs(self->adjust) > 10.0 * self->step_time || self->tc < 50.0);
}

PyDoc_STRVAR(Core_truncation_doc,
             "truncation($self, /)\n--\n\n"
             "The episode's time budget (90 minutes) is used up.");

static PyObject *
Core_truncation(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->time > 90.0);
}

PyDoc_STRVAR(Core_states_doc,
             "states($self, /)\n--\n\n"
             "The current state dict (what the last reset or step returned).");

static PyObject *
Core_states(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return build_states(self);
}

/* Every field but random and h from src (load() and __setstate__). */
static void
set_fields(CoreObject *self, const CoreObject *src)
{
    self->step_time = src->step_time;
    self->n_its = src->n_its;
    self->max_adjust = src->max_adjust;
    self->c_noise = src->c_noise;
    self->t_noise = src->t_noise;
    self->noisy = src->noisy;
    self->shift = src->shift;
    self->p1 = src->p1;
    self->p2 = src->p2;
    self->c_slope = src->c_slope;
    self->t_slope = src->t_slope;
    self->tc = src->tc;
    self->cr = src->cr;
    self->tr = src->tr;
    self->cr_meas = src->cr_meas;
    self->tr_meas = src->tr_meas;
    self->cref = src->cref;
    self->tref = src->tref;
    self->time = src->time;
    self->rms = src->rms;
    self->adjust = src->adjust;
}

PyDoc_STRVAR(Core_load_doc,
             "load($self, /, *, step_time, n_its, max_adjust, c_noise, t_noise, noisy, shift, "
             "p1, p2, c_slope, t_slope, tc, cr, tr, cr_meas, tr_meas, cref, tref, time, rms, "
             "adjust)\n--\n\n"
             "Set the episode's constants and state (what CSTR.reset computed).");

static PyObject *
Core_load(CoreObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {
        "step_time", "n_its",   "max_adjust", "c_noise", "t_noise", "noisy", "shift",
        "p1",        "p2",      "c_slope",    "t_slope", "tc",      "cr",    "tr",
        "cr_meas",   "tr_meas", "cref",       "tref",    "time",    "rms",   "adjust",
        NULL,
    };
    CoreObject v;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "|$dLdddp" "ddddd" "ddddd" "ddddd" ":load", kwlist, &v.step_time,
            &v.n_its, &v.max_adjust, &v.c_noise, &v.t_noise, &v.noisy, &v.shift, &v.p1, &v.p2,
            &v.c_slope, &v.t_slope, &v.tc, &v.cr, &v.tr, &v.cr_meas, &v.tr_meas, &v.cref,
            &v.tref, &v.time, &v.rms, &v.adjust)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL ||
        PyDict_GET_SIZE(kwargs) != (Py_ssize_t)(sizeof(kwlist) / sizeof(kwlist[0]) - 1)) {
        PyErr_SetString(PyExc_TypeError, "load() needs every keyword argument");
        return NULL;
    }
    if (!(v.step_time > 0.0) || v.n_its < 1) {
        PyErr_SetString(PyExc_ValueError, "load(): step_time must be > 0 and n_its >= 1");
        return NULL;
    }
    set_fields(self, &v);
    /* sim.py's self._h = step_time / n_its (an int, converted to float as Python does). */
    self->h = v.step_time / (double)v.n_its;
    Py_RETURN_NONE;
}

/* dump() and restore(): the fields as a tuple, for CSTR.__getstate__/__setstate__ (pickle and
 * copy.deepcopy). The core itself is not picklable: its generator belongs to the CSTR, which
 * builds a new core around its own copy and restores the fields into it. */
PyDoc_STRVAR(Core_dump_doc, "dump($self, /)\n--\n\nThe core's fields, a tuple for restore().");

static PyObject *
Core_dump(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(dLddddiddddddddddddddd)", self->step_time, self->n_its, self->h,
                         self->max_adjust, self->c_noise, self->t_noise, self->noisy,
                         self->shift, self->p1, self->p2, self->c_slope, self->t_slope,
                         self->tc, self->cr, self->tr, self->cr_meas, self->tr_meas,
                         self->cref, self->tref, self->time, self->rms, self->adjust);
}

PyDoc_STRVAR(Core_restore_doc,
             "restore($self, fields, /)\n--\n\nSet the fields dump() returned.");

static PyObject *
Core_restore(CoreObject *self, PyObject *fields)
{
    CoreObject v;
    if (!PyTuple_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "restore() takes the tuple dump() returned");
        return NULL;
    }
    if (!PyArg_ParseTuple(fields, "dLddddiddddddddddddddd:restore", &v.step_time, &v.n_its,
                          &v.h, &v.max_adjust, &v.c_noise, &v.t_noise, &v.noisy, &v.shift,
                          &v.p1, &v.p2, &v.c_slope, &v.t_slope, &v.tc, &v.cr, &v.tr,
                          &v.cr_meas, &v.tr_meas, &v.cref, &v.tref, &v.time, &v.rms,
                          &v.adjust)) {
        return NULL;
    }
    set_fields(self, &v);
    self->h = v.h;
    Py_RETURN_NONE;
}

static PyMethodDef Core_methods[] = {
    {"step", (PyCFunction)Core_step, METH_O, Core_step_doc},
    {"termination", (PyCFunction)Core_termination, METH_NOARGS, Core_termination_doc},
    {"truncation", (PyCFunction)Core_truncation, METH_NOARGS, Core_truncation_doc},
    {"states", (PyCFunction)Core_states, METH_NOARGS, Core_states_doc},
    {"dump", (PyCFunction)Core_dump, METH_NOARGS, Core_dump_doc},
    {"restore", (PyCFunction)Core_restore, METH_O, Core_restore_doc},
    {"load", (PyCFunction)(void (*)(void))Core_load, METH_VARARGS | METH_KEYWORDS,
     Core_load_doc},
    {NULL, NULL, 0, NULL},
};

static int
Core_init(CoreObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"random", NULL};
    PyObject *random;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Core", kwlist, &random)) {
        return -1;
    }
    if (!PyCallable_Check(random)) {
        PyErr_SetString(PyExc_TypeError, "Core(random): random must be callable");
        return -1;
    }
    Py_INCREF(random);
    Py_XSETREF(self->random, random);
    /* Until load(): an episode at the low operating point, never stepped. */
    self->step_time = 1.0;
    self->n_its = 2;
    self->h = 0.5;
    self->max_adjust = 10.0;
    self->p1 = self->p2 = INFINITY;
    self->tc = 292.0;
    self->cr = self->cr_meas = self->cref = C_LOW;
    self->tr = self->tr_meas = self->tref = T_LOW;
    return 0;
}

static int
Core_traverse(CoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->random);
    return 0;
}

static int
Core_clear(CoreObject *self)
{
    Py_CLEAR(self->random);
    return 0;
}

static void
Core_dealloc(CoreObject *self)
{
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Core_doc,
             "Core(random)\n--\n\n"
             "One CSTR's episode state and its compiled step; random is the instance's\n"
             "random.Random().random (the noise stream stays the pure path's).");

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_cstr_native.Core",
    .tp_basicsize = sizeof(CoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Core_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
};

/* --------------------------------------------------------------- module functions (tests) */

PyDoc_STRVAR(taylor_step_doc,
             "taylor_step(c, t, p, h, /)\n--\n\n"
             "sim.py's _taylor_step: (Cr, Tr, fraction of h covered) after one Taylor step.");

static PyObject *
py_taylor_step(PyObject *Py_UNUSED(module), PyObject *args)
{
    double c, t, p, h, frac;
    if (!PyArg_ParseTuple(args, "dddd:taylor_step", &c, &t, &p, &h)) {
        return NULL;
    }
    if (taylor_step(c, t, p, h, &c, &t, &frac) < 0) {
        return NULL;
    }
    return Py_BuildValue("(ddd)", c, t, frac);
}

PyDoc_STRVAR(integrate_doc,
             "integrate(c, t, p, h, /)\n--\n\n"
             "One whole sub-interval (sim.py's _taylor_step, then _finish): (Cr, Tr).");

static PyObject *
py_integrate(PyObject *Py_UNUSED(module), PyObject *args)
{
    double c, t, p, h;
    if (!PyArg_ParseTuple(args, "dddd:integrate", &c, &t, &p, &h)) {
        return NULL;
    }
    if (integrate(&c, &t, p, h) < 0) {
        return NULL;
    }
    return Py_BuildValue("(dd)", c, t);
}

static PyMethodDef module_methods[] = {
    {"taylor_step", py_taylor_step, METH_VARARGS, taylor_step_doc},
    {"integrate", py_integrate, METH_VARARGS, integrate_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
             "The compiled hot path of the CSTR sample (examples/cstr/sim.py): the same\n"
             "algorithm, bit for bit. Optional: without it the sample runs in pure Python.");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cstr_native",
    .m_doc = module_doc,
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cstr_native(void)
{
    PyObject *m;
    int i;
    if (PyType_Ready(&CoreType) < 0) {
        return NULL;
    }
    if (state_template == NULL) {
        state_template = PyDict_New();
        if (state_template == NULL) {
            return NULL;
        }
        for (i = 0; i < N_STATES; i++) {
            state_keys[i] = PyUnicode_InternFromString(STATE_NAMES[i]);
            if (state_keys[i] == NULL ||
                PyDict_SetItem(state_template, state_keys[i], Py_None) < 0) {
                return NULL;
            }
        }
        action_key = PyUnicode_InternFromString("Tc_adjust");
        if (action_key == NULL) {
            return NULL;
        }
    }
    m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "VERSION", CSTR_NATIVE_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
