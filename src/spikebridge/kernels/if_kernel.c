
#include <stdint.h>

/* One soft-reset IF step per element (spikebridge docs/methods.md section 2.1):
   m = v + c (+ e); s = [m >= theta] in {0, 1}; v = m - theta s; x = value s.
   Branch-free, so that the compiler vectorizes it; theta s and value s are exact. */
#define SPIKEBRIDGE_IF_BODY(REAL, EXTRA)                                                   \
    {                                                                                      \
        REAL m = v[i] + c[i];                                                              \
        EXTRA                                                                              \
        REAL s = (REAL)(m >= theta);                                                       \
        v[i] = m - theta * s;                                                              \
        x[i] = value * s;                                                                  \
    }

#define SPIKEBRIDGE_IF_STEP(NAME, REAL)                                                    \
void NAME(REAL *v, const REAL *c, REAL *x, int64_t n, REAL theta, REAL value, REAL extra,   \
          int use_extra, int threads) {                                                    \
    if (threads > 1 && n >= 16384) {                                                       \
        if (use_extra) {                                                                   \
            _Pragma("omp parallel for simd schedule(static) num_threads(threads)")         \
            for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, m = m + extra;)      \
        } else {                                                                           \
            _Pragma("omp parallel for simd schedule(static) num_threads(threads)")         \
            for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, )                    \
        }                                                                                  \
    } else if (use_extra) {                                                                \
        _Pragma("omp simd")                                                                \
        for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, m = m + extra;)          \
    } else {                                                                               \
        _Pragma("omp simd")                                                                \
        for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, )                        \
    }                                                                                      \
}

SPIKEBRIDGE_IF_STEP(spikebridge_if_step_f32, float)
SPIKEBRIDGE_IF_STEP(spikebridge_if_step_f64, double)

/* COS's first pre-simulation (spikebridge docs/methods.md section 4.5): per neuron, rho soft-reset
   IF steps from v0 (frame t at c + t * frame_stride; frame_stride 0: a constant current), then
   v(rho), the count N = round(sum(value s) / value) as the eager code counts, and Theorem 1's
   sign [N < rho and v >= theta] - [N >= 1 and v < 0]. Blocks of SPIKEBRIDGE_BLOCK neurons keep
   v and the sum in L1 while the frames stream past, one simple vectorizable loop per frame.
   Rounding half to even without libm: (|x| + 2^p) - 2^p is exact for |x| < 2^p (p = 23 or 52);
   larger, inf and NaN stay as they are. */
#define SPIKEBRIDGE_BLOCK 512
#define SPIKEBRIDGE_PRESIMULATE(NAME, REAL, ABS, COPYSIGN, MAGIC)                          \
static void NAME##_frame(REAL *restrict v, REAL *restrict acc, const REAL *restrict c,       \
                         int64_t len, REAL theta, REAL value) {                              \
    for (int64_t j = 0; j < len; ++j) {                                                       \
        REAL m = v[j] + c[j];                                                                 \
        REAL s = (REAL)(m >= theta);                                                          \
        v[j] = m - theta * s;                                                                 \
        acc[j] = acc[j] + value * s;                                                          \
    }                                                                                         \
}                                                                                             \
static void NAME##_finish(const REAL *restrict v, const REAL *restrict acc,                  \
                          REAL *restrict v_out, REAL *restrict n_out, int8_t *restrict sign,  \
                          int64_t len, int64_t steps, REAL theta, REAL value) {              \
    for (int64_t j = 0; j < len; ++j) {                                                       \
        REAL q = acc[j] / value;                                                              \
        REAL a = ABS(q);                                                                      \
        REAL count = a < MAGIC ? COPYSIGN((a + MAGIC) - MAGIC, q) : q;                        \
        v_out[j] = v[j];                                                                      \
        n_out[j] = count;                                                                     \
        sign[j] = (int8_t)((count < (REAL)steps && v[j] >= theta)                             \
                           - (count >= 1 && v[j] < 0));                                       \
    }                                                                                         \
}                                                                                             \
void NAME(const REAL *v0, const REAL *c, int64_t frame_stride, int64_t steps, REAL *v_out,    \
          REAL *n_out, int8_t *sign_out, int64_t n, REAL theta, REAL value, int threads) {   \
    const int64_t blocks = (n + SPIKEBRIDGE_BLOCK - 1) / SPIKEBRIDGE_BLOCK;                   \
    _Pragma("omp parallel for schedule(static) num_threads(threads) \
             if(threads > 1 && n * steps >= 16384)")                                          \
    for (int64_t b = 0; b < blocks; ++b) {                                                    \
        const int64_t start = b * SPIKEBRIDGE_BLOCK;                                          \
        const int64_t len = n - start < SPIKEBRIDGE_BLOCK ? n - start : SPIKEBRIDGE_BLOCK;    \
        REAL v[SPIKEBRIDGE_BLOCK], acc[SPIKEBRIDGE_BLOCK];                                    \
        for (int64_t j = 0; j < len; ++j) { v[j] = v0[start + j]; acc[j] = 0; }               \
        for (int64_t t = 0; t < steps; ++t)                                                   \
            NAME##_frame(v, acc, c + t * frame_stride + start, len, theta, value);            \
        NAME##_finish(v, acc, v_out + start, n_out + start, sign_out + start, len, steps,     \
                      theta, value);                                                          \
    }                                                                                         \
}

/* The IF layer over all its steps (layer-wise execution, spikebridge docs/methods.md section 2.1):
   the same soft-reset step as SPIKEBRIDGE_IF_BODY for t = 0 .. steps-1, frame t of the current
   at c + t * c_stride (0: a constant current) and of the output at x + t * x_stride. With a
   second current b (a residual connection's other branch, frame t at b + t * b_stride), the
   current is (c + b), rounded before it joins v, as the eager code sums the branches first.
   Blocks of SPIKEBRIDGE_SCAN_BLOCK neurons keep v in cache across the steps: v is read and
   written once per layer instead of once per step, and the branch sum never goes through
   memory. */
#define SPIKEBRIDGE_SCAN_LOOP(REAL, CURRENT, EXTRA)                                           \
    for (int64_t j = 0; j < len; ++j) {                                                       \
        REAL m = v[j] + CURRENT;                                                              \
        EXTRA                                                                                 \
        REAL s = (REAL)(m >= theta);                                                          \
        v[j] = m - theta * s;                                                                 \
        x[j] = value * s;                                                                     \
    }
#define SPIKEBRIDGE_SCAN_BLOCK 8192
#define SPIKEBRIDGE_IF_SCAN(NAME, REAL)                                                       \
static void NAME##_frame(REAL *restrict v, const REAL *restrict c, const REAL *restrict b,   \
                         REAL *restrict x, int64_t len, REAL theta, REAL value, REAL extra,   \
                         int use_extra) {                                                     \
    if (b && use_extra) {                                                                     \
        SPIKEBRIDGE_SCAN_LOOP(REAL, (c[j] + b[j]), m = m + extra;)                            \
    } else if (b) {                                                                           \
        SPIKEBRIDGE_SCAN_LOOP(REAL, (c[j] + b[j]), )                                          \
    } else if (use_extra) {                                                                   \
        SPIKEBRIDGE_SCAN_LOOP(REAL, c[j], m = m + extra;)                                     \
    } else {                                                                                  \
        SPIKEBRIDGE_SCAN_LOOP(REAL, c[j], )                                                  \
    }                                                                                         \
}                                                                                             \
void NAME(REAL *v_io, const REAL *c, int64_t c_stride, const REAL *b, int64_t b_stride,      \
          REAL *x, int64_t x_stride, int64_t steps, int64_t n, REAL theta, REAL value,       \
          REAL extra, int use_extra, int threads) {                                          \
    const int64_t size = SPIKEBRIDGE_SCAN_BLOCK;                                              \
    const int64_t blocks = (n + size - 1) / size;                                             \
    _Pragma("omp parallel for schedule(static) num_threads(threads) \
             if(threads > 1 && n * steps >= 16384)")                                          \
    for (int64_t k = 0; k < blocks; ++k) {                                                    \
        const int64_t start = k * size;                                                       \
        const int64_t len = n - start < size ? n - start : size;                              \
        REAL v[SPIKEBRIDGE_SCAN_BLOCK];                                                       \
        for (int64_t j = 0; j < len; ++j) v[j] = v_io[start + j];                             \
        for (int64_t t = 0; t < steps; ++t)                                                   \
            NAME##_frame(v, c + t * c_stride + start, b ? b + t * b_stride + start : 0,       \
                         x + t * x_stride + start, len, theta, value, extra, use_extra);      \
        for (int64_t j = 0; j < len; ++j) v_io[start + j] = v[j];                             \
    }                                                                                         \
}

SPIKEBRIDGE_IF_SCAN(spikebridge_if_scan_f32, float)
SPIKEBRIDGE_IF_SCAN(spikebridge_if_scan_f64, double)

SPIKEBRIDGE_PRESIMULATE(spikebridge_presimulate_f32, float, __builtin_fabsf, __builtin_copysignf,
                        8388608.0f)
SPIKEBRIDGE_PRESIMULATE(spikebridge_presimulate_f64, double, __builtin_fabs, __builtin_copysign,
                        4503599627370496.0)
