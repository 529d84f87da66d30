/* The decode step's CPU kernels, float32, AVX-512: built and loaded by kernels.py (see there
 * for why they exist and when they are used).
 *
 * 1. tenacia_small_gemm: y (M x N) = x (M x K) . W^T + bias for the few rows of a decode step. A decode
 * step's products read every weight once for a handful of rows, so they are bound by how fast the
 * weights stream from memory, not by arithmetic: MKL's packed GEMM for 16 rows overlaps its loads
 * with its arithmetic poorly and reads the weights well below what the machine can stream
 * (measured in docs/serving.md, "Where a decode step's time went"). This kernel keeps the
 * weights in panels of 16 output columns, k-major, so that every step of the inner loop reads the
 * next 64-byte line of one stream, and prefetches that stream far ahead in software.
 *
 * Layout: panel p holds columns 16p .. 16p+15 (zero-padded past N):
 *   P[(p * K + k) * 16 + j] = W[16p + j][k]
 * Threads (OpenMP, the same runtime torch uses) take contiguous runs of panels. The rows are read
 * through a transposed copy of x (gemm_input.c: one stream of consecutive floats, not one per row).
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_input.c"
#include "kv_ahead.c"

#ifndef FAR
#define FAR 1024 /* 64-byte lines ahead prefetched towards the outer caches */
#endif
#ifndef NEAR
#define NEAR 64 /* lines ahead prefetched into L1 */
#endif

void tenacia_small_gemm_pack(const float *w, long n, long k, float *p) {
  long panels = (n + 15) / 16;
  for (long q = 0; q < panels; q++)
    for (long kk = 0; kk < k; kk++)
      for (long j = 0; j < 16; j++) {
        long col = q * 16 + j;
        p[(q * k + kk) * 16 + j] = col < n ? w[col * k + kk] : 0.0f;
      }
}

/* MR rows of x against one panel: MR accumulators of 16 columns each; row m's k-th float at
 * xt[k * ldt + m] (gemm_input.c). Fewer than 4 rows keep S = 4 / MR running sums a row, over k mod
 * S, added at the end: a multiply-add then never waits for the one before it (one chain of
 * dependent multiply-adds, 4 cycles each, held a row's step to ~2/3 of the read rate the machine
 * reaches: docs/benchmarks.md, "One row's product in four sums"); -DNO_SPLIT keeps one. */
#ifdef NO_SPLIT
#define SPLIT(MR) 1
#else
#define SPLIT(MR) ((MR) >= 4 ? 1 : 4 / (MR))
#endif
#define BLOCK(MR)                                                                                \
  static inline void block##MR(const float *xt, long ldt, long k, const float *panel, float *y, long ldy, \
                               const float *bias, __mmask16 mask, struct ahead *a) {           \
    enum { S = SPLIT(MR) };                                                                      \
    __m512 acc[S][MR];                                                                           \
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();                 \
    for (int u = 0; u < S; u++)                                                                  \
      for (int m = 0; m < MR; m++) acc[u][m] = u ? _mm512_setzero_ps() : b;                      \
    long kk = 0;                                                                                 \
    for (; kk + S <= k; kk += S) {                                                               \
      if (a && kk % AHEAD_EVERY == 0) ahead_step(a);                                             \
      for (int u = 0; u < S; u++) {                                                              \
        _mm_prefetch((const char *)(panel + (kk + u + FAR) * 16), _MM_HINT_T2);                 \
        _mm_prefetch((const char *)(panel + (kk + u + NEAR) * 16), _MM_HINT_T0);                \
        __m512 w = _mm512_loadu_ps(panel + (kk + u) * 16);                                       \
        for (int m = 0; m < MR; m++)                                                             \
          acc[u][m] = _mm512_fmadd_ps(_mm512_set1_ps(xt[(kk + u) * ldt + m]), w, acc[u][m]);     \
      }                                                                                          \
    }                                                                                            \
    for (; kk < k; kk++) {                                                                       \
      __m512 w = _mm512_loadu_ps(panel + kk * 16);                                               \
      for (int m = 0; m < MR; m++) acc[0][m] = _mm512_fmadd_ps(_mm512_set1_ps(xt[kk * ldt + m]), w, acc[0][m]); \
    }                                                                                            \
    for (int m = 0; m < MR; m++) {                                                               \
      __m512 sum = acc[0][m];                                                                    \
      if (S == 4) sum = _mm512_add_ps(_mm512_add_ps(acc[0][m], acc[1 % S][m]), _mm512_add_ps(acc[2 % S][m], acc[3 % S][m])); \
      else if (S == 2) sum = _mm512_add_ps(acc[0][m], acc[1 % S][m]);                            \
      _mm512_mask_storeu_ps(y + m * ldy, mask, sum);                                             \
    }                                                                                            \
  }
BLOCK(16)
BLOCK(8)
BLOCK(4)
BLOCK(2)
BLOCK(1)

/* Panels q0 .. q1 - 1 of y (m x n) = x (m x k) . W^T + bias: one thread's share of a product;
 * xt: x transposed (k x m, gemm_input.c). */
static void gemm_panels(const float *xt, long m, long k, const float *p, long n, const float *bias, float *y,
                        long q0, long q1, struct ahead *a) {
  for (long q = q0; q < q1; q++) {
    const float *panel = p + q * k * 16;
    long col = q * 16;
    __mmask16 mask = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1);
    const float *b = bias ? bias + col : 0;
    long r = 0;
    for (; r + 16 <= m; r += 16) block16(xt + r, m, k, panel, y + r * n + col, n, b, mask, a);
    if (m - r >= 8) { block8(xt + r, m, k, panel, y + r * n + col, n, b, mask, a); r += 8; }
    if (m - r >= 4) { block4(xt + r, m, k, panel, y + r * n + col, n, b, mask, a); r += 4; }
    if (m - r >= 2) { block2(xt + r, m, k, panel, y + r * n + col, n, b, mask, a); r += 2; }
    if (m - r >= 1) block1(xt + r, m, k, panel, y + r * n + col, n, b, mask, a);
  }
}

/* tenacia_small_gemm (x . W^T + bias over these panels): decode_stack.c, shared by every build. */

/* 2. Elementwise work between the products, one call each instead of five to eight torch ops.
 * A decode step's few rows run on the calling thread (a few KB: less than an OpenMP fork costs);
 * a prefill's rows (PARALLEL_ROWS or more) are shared among the threads. */
#define PARALLEL_ROWS 64

/* exp(x) for 16 floats: 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2, p of degree 7 (Taylor);
 * relative error < 2e-7. Inputs below -87.3 give 0 (the underflow of expf). */
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  /* ln2, high part */
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);    /* ln2, low part */
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail(long left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

/* x (rows, dim) += delta (when not NULL); out = x / sqrt(mean(x^2) + eps) * w. One row: */
static void norm_row(float *xr, const float *dr, const float *w, float eps, float *out, long dim) {
  __m512 ss = _mm512_setzero_ps();
  for (long i = 0; i < dim; i += 16) {
    __mmask16 m = tail(dim - i);
    __m512 v = _mm512_maskz_loadu_ps(m, xr + i);
    if (dr) {
      v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, dr + i));
      _mm512_mask_storeu_ps(xr + i, m, v);
    }
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  __m512 scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)dim + eps));
  for (long i = 0; i < dim; i += 16) {
    __mmask16 m = tail(dim - i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), scale);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i)));
  }
}

void tenacia_add_rms_norm(float *x, const float *delta, const float *w, float eps, float *out, long rows, long dim,
                          int threads) {
#pragma omp parallel for schedule(static) if (rows >= PARALLEL_ROWS) num_threads(threads)
  for (long r = 0; r < rows; r++) norm_row(x + r * dim, delta ? delta + r * dim : 0, w, eps, out + r * dim, dim);
}

/* Rotary embedding in place, "rotate half" layout, on the first `heads` heads of each row of x
 * (rows, ld): x1, x2 = halves; x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin. cos, sin: (rows, hd),
 * each half repeated as in llama.rotary_table. hd even. */
static void rotary_row(float *x, long heads, long hd, const float *c, const float *s) {
  long half = hd / 2;
  for (long h = 0; h < heads; h++) {
    float *a = x + h * hd, *b = a + half;
    for (long i = 0; i < half; i += 16) {
      __mmask16 m = tail(half - i);
      __m512 x1 = _mm512_maskz_loadu_ps(m, a + i), x2 = _mm512_maskz_loadu_ps(m, b + i);
      __m512 c1 = _mm512_maskz_loadu_ps(m, c + i), s1 = _mm512_maskz_loadu_ps(m, s + i);
      __m512 c2 = _mm512_maskz_loadu_ps(m, c + half + i), s2 = _mm512_maskz_loadu_ps(m, s + half + i);
      _mm512_mask_storeu_ps(a + i, m, _mm512_fnmadd_ps(x2, s1, _mm512_mul_ps(x1, c1)));
      _mm512_mask_storeu_ps(b + i, m, _mm512_fmadd_ps(x1, s2, _mm512_mul_ps(x2, c2)));
    }
  }
}

void tenacia_rotary(float *x, long rows, long ld, long heads, long hd, const float *cos, const float *sin,
                    int threads) {
#pragma omp parallel for schedule(static) if (rows >= PARALLEL_ROWS) num_threads(threads)
  for (long r = 0; r < rows; r++) rotary_row(x + r * ld, heads, hd, cos + r * hd, sin + r * hd);
}

/* out (rows, n) = silu(gate) * up, silu(g) = g / (1 + exp(-g)); row r of gate at gate + r * ld, of
 * up at up + r * ld (a fused [gate | up] product: up = gate + n, ld = 2n; two products: ld = n). */
static void silu_row(const float *g, const float *u, long n, float *o) {
  for (long i = 0; i < n; i += 16) {
    __mmask16 m = tail(n - i);
    __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    __m512 sg = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
    _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(m, u + i)));
  }
}

void tenacia_silu_mul(const float *gate, const float *up, long ld, long rows, long n, float *out, int threads) {
#pragma omp parallel for schedule(static) if (rows >= PARALLEL_ROWS) num_threads(threads)
  for (long r = 0; r < rows; r++) silu_row(gate + r * ld, up + r * ld, n, out + r * n);
}

/* 3. The decode attention: decode_attention_avx512.c. */
#include "decode_attention_avx512.c"

/* The vector prefill_attention.c is written on: 16 floats, the operations it needs. */
#define VEC 16
typedef float vf __attribute__((vector_size(64)));
static inline vf vload(const float *p) { return (vf)_mm512_loadu_ps(p); }
static inline void vstore(float *p, vf v) { _mm512_storeu_ps(p, (__m512)v); }
static inline vf splat(float x) { return (vf)_mm512_set1_ps(x); }
static inline vf vexp(vf x) { return (vf)exp16((__m512)x); }
static inline vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
static inline float hmax(vf v) { return _mm512_reduce_max_ps((__m512)v); }
static inline float hsum(vf v) { return _mm512_reduce_add_ps((__m512)v); }

#include "attention_tasks.c"
#include "prefill_attention.c"
#include "decode_stack.c"
#include "greedy.c"
