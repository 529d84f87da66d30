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
 * xt[k * ldt + m] (gemm_input.c). */
#define BLOCK(MR)                                                                                \
  static inline void block##MR(const float *xt, long ldt, long k, const float *panel, float *y, long ldy, \
                               const float *bias, __mmask16 mask) {                             \
    __m512 acc[MR];                                                                              \
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();                 \
    for (int m = 0; m < MR; m++) acc[m] = b;                                                     \
    for (long kk = 0; kk < k; kk++) {                                                            \
      _mm_prefetch((const char *)(panel + (kk + FAR) * 16), _MM_HINT_T2);                       \
      _mm_prefetch((const char *)(panel + (kk + NEAR) * 16), _MM_HINT_T0);                      \
      __m512 w = _mm512_loadu_ps(panel + kk * 16);                                               \
      for (int m = 0; m < MR; m++) acc[m] = _mm512_fmadd_ps(_mm512_set1_ps(xt[kk * ldt + m]), w, acc[m]); \
    }                                                                                            \
    for (int m = 0; m < MR; m++) _mm512_mask_storeu_ps(y + m * ldy, mask, acc[m]);              \
  }
BLOCK(16)
BLOCK(8)
BLOCK(4)
BLOCK(2)
BLOCK(1)

/* Panels q0 .. q1 - 1 of y (m x n) = x (m x k) . W^T + bias: one thread's share of a product;
 * xt: x transposed (k x m, gemm_input.c). */
static void gemm_panels(const float *xt, long m, long k, const float *p, long n, const float *bias, float *y,
                        long q0, long q1) {
  for (long q = q0; q < q1; q++) {
    const float *panel = p + q * k * 16;
    long col = q * 16;
    __mmask16 mask = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1);
    const float *b = bias ? bias + col : 0;
    long r = 0;
    for (; r + 16 <= m; r += 16) block16(xt + r, m, k, panel, y + r * n + col, n, b, mask);
    if (m - r >= 8) { block8(xt + r, m, k, panel, y + r * n + col, n, b, mask); r += 8; }
    if (m - r >= 4) { block4(xt + r, m, k, panel, y + r * n + col, n, b, mask); r += 4; }
    if (m - r >= 2) { block2(xt + r, m, k, panel, y + r * n + col, n, b, mask); r += 2; }
    if (m - r >= 1) block1(xt + r, m, k, panel, y + r * n + col, n, b, mask);
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

/* 3. Attention of one new token per sequence over its cached keys and values.
 * q: query head h of sequence b at q + b * q_row + h * hd; k, v: (B, KVH, cap, hd), the decode
 * mirror of kv_cache.py (sequence b's keys are its first lengths[b] rows); query heads
 * kvh * G .. kvh * G + G - 1 read key/value head kvh (G = H / KVH, G <= 16, hd <= 512).
 * out: (B, H, hd). Softmax(q.k * scale) v, computed online over blocks of keys (the running
 * maximum rescales what came before), so any length runs in fixed memory. One task per
 * (sequence, key/value head), taken dynamically: tasks differ in length. The common shapes
 * (G * hd / 16 <= 16: SmolLM2's 3 x 64, Llama's 4 x 64, ...) run attend_fast, whose accumulators
 * stay in registers (the compiler specialises it for each constant G and NV); others attend_any. */
#define KEYS 32
#define MAX_GROUP 16
#define MAX_HD 512

/* One block of n scores (s, in place) joins a running softmax: the block's maximum updates the
 * running maximum *m, s becomes exp(s - *m), *l the running sum. Returns the factor by which the
 * caller rescales what it accumulated before (0 on the first block, when *m was -inf). */
static inline float softmax_block(float *s, long n, float *m, float *l) {
  __m512 most = _mm512_set1_ps(*m);
  for (long j = 0; j < n; j += 16) most = _mm512_max_ps(most, _mm512_mask_loadu_ps(most, tail(n - j), s + j));
  float top = _mm512_reduce_max_ps(most);
  float corr = expf(*m - top);
  __m512 sum = _mm512_setzero_ps();
  for (long j = 0; j < n; j += 16) {
    __mmask16 mk = tail(n - j);
    __m512 p = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), _mm512_set1_ps(top))));
    _mm512_mask_storeu_ps(s + j, mk, p);
    sum = _mm512_add_ps(sum, p);
  }
  *l = *l * corr + _mm512_reduce_add_ps(sum);
  *m = top;
  return corr;
}

/* The register-resident path, for G heads of NV * 16 floats (G * NV <= 16: the accumulators stay
 * in registers; the compiler specialises it for each constant G and NV). Keys come in blocks of
 * 16, one vector of scores a head: each key's 16 partial dot products (all heads from one load of
 * the key), 4 keys folded into one vector by in-lane shuffles (fold2, fold4), 16 into one by
 * 128-bit lane shuffles (fold_lanes): 45 operations for 16 scores, where a horizontal sum took ~8
 * for one. The block joins the running softmax in vectors only: its maximum broadcast to every
 * lane (max16), the running sum l kept per lane and summed at the end. The values are then added
 * with the probabilities broadcast from one 64-byte row per head, in L1.
 * The keys and values stream in from memory (a step's are ~74 MB for SmolLM2 at 16 sequences of
 * 100 tokens) by the hardware's prefetchers alone: software prefetches a block ahead, or 8, 32,
 * 64 rows ahead, made this stage slower (bench/decode_stack_ab.py --stages); as did blocks of 32
 * keys. The driver still fetches the first keys of the next task (attention_tasks.c). */

/* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
static inline __m512 fold2(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}
/* fold2(a, b), fold2(c, d) -> per 128-bit lane: the lane's sums of a, b, c, d */
static inline __m512 fold4(__m512 ab, __m512 cd) {
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}
/* a, b: per 128-bit lane, sums of 4 keys each (keys 0-3 of a, 4-7 of b, or of 8 and 8) -> the
 * lanes' sums paired: applied to (keys 0-3, 4-7) and (8-11, 12-15), then to the two results, it
 * leaves key j's whole sum in lane j */
static inline __m512 fold_lanes(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
}
/* every lane: the largest of s's 16 */
static inline __m512 max16(__m512 s) {
  s = _mm512_max_ps(s, _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_max_ps(s, _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
  s = _mm512_max_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_max_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* Key j of the block at K (n keys valid): d[g], its partial dot products with head g's query (NV
 * vectors a head, from L1). Past n, the last valid key again (its score is masked by the caller). */
static inline __attribute__((always_inline)) void key_dots(const float *Q, const float *K, long j, long n, __m512 *d,
                                                           const int G, const int NV) {
  const float *kt = K + (j < n ? j : n - 1) * NV * 16;
  __m512 kv[8];
  for (int v = 0; v < NV; v++) kv[v] = _mm512_loadu_ps(kt + v * 16);
  for (int g = 0; g < G; g++) {
    d[g] = _mm512_mul_ps(_mm512_loadu_ps(Q + g * NV * 16), kv[0]);
    for (int v = 1; v < NV; v++) d[g] = _mm512_fmadd_ps(_mm512_loadu_ps(Q + (g * NV + v) * 16), kv[v], d[g]);
  }
}

/* Keys j0 .. j0 + 3 (j0 < n): w[g], per 128-bit lane, head g's sums of the four (fold4) */
static inline __attribute__((always_inline)) void quad(const float *Q, const float *K, long j0, long n, __m512 *w,
                                                       const int G, const int NV) {
  __m512 a[16], b[16], pair[16];
  key_dots(Q, K, j0, n, a, G, NV);
  key_dots(Q, K, j0 + 1, n, b, G, NV);
  for (int g = 0; g < G; g++) pair[g] = fold2(a[g], b[g]);
  key_dots(Q, K, j0 + 2, n, a, G, NV);
  key_dots(Q, K, j0 + 3, n, b, G, NV);
  for (int g = 0; g < G; g++) w[g] = fold4(pair[g], fold2(a[g], b[g]));
}

/* Keys j0 .. j0 + 7 (j0 < n): x[g], head g's sums of keys j0 .. j0 + 3 as halves in 128-bit lanes
 * 0 and 1, of the next four in lanes 2 and 3 (fold_lanes of two quads; past n, zeros) */
static inline __attribute__((always_inline)) void octet(const float *Q, const float *K, long j0, long n, __m512 *x,
                                                        const int G, const int NV) {
  __m512 w0[16], w1[16];
  quad(Q, K, j0, n, w0, G, NV);
  if (j0 + 4 < n) quad(Q, K, j0 + 4, n, w1, G, NV);
  else
    for (int g = 0; g < G; g++) w1[g] = _mm512_setzero_ps();
  for (int g = 0; g < G; g++) x[g] = fold_lanes(w0[g], w1[g]);
}

/* The block of n <= 16 keys at K: s[g], head g's 16 scores in key order (unscaled; past n, any
 * finite value) */
static inline __attribute__((always_inline)) void scores16(const float *Q, const float *K, long n, __m512 *s,
                                                           const int G, const int NV) {
  __m512 x[16], y[16];
  octet(Q, K, 0, n, x, G, NV);
  if (8 < n) octet(Q, K, 8, n, y, G, NV);
  else
    for (int g = 0; g < G; g++) y[g] = _mm512_setzero_ps();
  for (int g = 0; g < G; g++) s[g] = fold_lanes(x[g], y[g]);
}

static inline __attribute__((always_inline)) void attend_fast(const float *Q, const float *K, const float *V, long L,
                                                              float scale, float *O, const int G, const int NV) {
  const long hd = NV * 16;
  __m512 acc[16], m[16], l[16];
  float p[16][16] __attribute__((aligned(64))); /* a block's probabilities, head by head */
  for (int g = 0; g < G; g++) {
    m[g] = _mm512_set1_ps(-INFINITY);
    l[g] = _mm512_setzero_ps();
    for (int v = 0; v < NV; v++) acc[g * NV + v] = _mm512_setzero_ps();
  }
  for (long t0 = 0; t0 < L; t0 += 16) {
    long n = L - t0 < 16 ? L - t0 : 16;
    __mmask16 valid = tail(n);
    __m512 s[16];
    scores16(Q, K + t0 * hd, n, s, G, NV);
    for (int g = 0; g < G; g++) { /* the block joins the running softmax; past n, score -inf, p 0 */
      s[g] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), valid, s[g], _mm512_set1_ps(scale));
      __m512 top = max16(_mm512_max_ps(m[g], s[g]));
      __m512 corr = exp16(_mm512_sub_ps(m[g], top)); /* ~1e-38 on the first block, when acc and l are 0 */
      __m512 e = _mm512_maskz_mov_ps(valid, exp16(_mm512_sub_ps(s[g], top)));
      l[g] = _mm512_fmadd_ps(l[g], corr, e);
      _mm512_store_ps(p[g], e);
      m[g] = top;
      for (int v = 0; v < NV; v++) acc[g * NV + v] = _mm512_mul_ps(acc[g * NV + v], corr);
    }
    for (long j = 0; j < n; j++) {
      const float *vt = V + (t0 + j) * hd;
      __m512 vv[8];
      for (int v = 0; v < NV; v++) vv[v] = _mm512_loadu_ps(vt + v * 16);
      for (int g = 0; g < G; g++) {
        __m512 pj = _mm512_set1_ps(p[g][j]);
        for (int v = 0; v < NV; v++) acc[g * NV + v] = _mm512_fmadd_ps(pj, vv[v], acc[g * NV + v]);
      }
    }
  }
  for (int g = 0; g < G; g++) {
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(l[g]));
    for (int v = 0; v < NV; v++) _mm512_storeu_ps(O + g * hd + v * 16, _mm512_mul_ps(acc[g * NV + v], inv));
  }
}

static void attend_any(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                       long hd) {
  float acc[MAX_GROUP][MAX_HD], m[MAX_GROUP], l[MAX_GROUP], s[MAX_GROUP][KEYS];
  for (long t = 0; t < KEYS && t < L; t++) {  /* the first block's keys and values: start both streams */
    _mm_prefetch((const char *)(K + t * hd), _MM_HINT_T0);
    _mm_prefetch((const char *)(V + t * hd), _MM_HINT_T0);
  }
  for (long g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    for (long d = 0; d < hd; d++) acc[g][d] = 0.0f;
  }
  for (long t0 = 0; t0 < L; t0 += KEYS) {
    long n = L - t0 < KEYS ? L - t0 : KEYS;
    for (long j = 0; j < n; j++) {
      const float *kt = K + (t0 + j) * hd;
      for (long d = 0; d < hd; d += 16) {  /* the next block's keys and values, a block ahead */
        _mm_prefetch((const char *)(kt + KEYS * hd + d), _MM_HINT_T0);
        _mm_prefetch((const char *)(V + (t0 + j + KEYS) * hd + d), _MM_HINT_T0);
      }
      for (long g = 0; g < G; g++) {
        __m512 dot = _mm512_setzero_ps();
        for (long d = 0; d < hd; d += 16) {
          __mmask16 mk = tail(hd - d);
          dot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, Q + g * hd + d), _mm512_maskz_loadu_ps(mk, kt + d), dot);
        }
        s[g][j] = _mm512_reduce_add_ps(dot) * scale;
      }
    }
    for (long g = 0; g < G; g++) {
      __m512 c = _mm512_set1_ps(softmax_block(s[g], n, &m[g], &l[g]));
      for (long d = 0; d < hd; d += 16) {
        __mmask16 mk = tail(hd - d);
        _mm512_mask_storeu_ps(acc[g] + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, acc[g] + d), c));
      }
    }
    for (long j = 0; j < n; j++) {
      const float *vt = V + (t0 + j) * hd;
      for (long g = 0; g < G; g++) {
        __m512 p = _mm512_set1_ps(s[g][j]);
        for (long d = 0; d < hd; d += 16) {
          __mmask16 mk = tail(hd - d);
          _mm512_mask_storeu_ps(acc[g] + d, mk,
                                _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mk, vt + d), _mm512_maskz_loadu_ps(mk, acc[g] + d)));
        }
      }
    }
  }
  for (long g = 0; g < G; g++) {
    __m512 inv = _mm512_set1_ps(1.0f / l[g]);
    float *o = O + g * hd;
    for (long d = 0; d < hd; d += 16) {
      __mmask16 mk = tail(hd - d);
      _mm512_mask_storeu_ps(o + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, acc[g] + d), inv));
    }
  }
}

/* One query group (G heads) against L keys and values: the register-resident path where the
 * shape has one, else the general one. */
static void attend_head(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                        long hd) {
  long NV = hd % 16 ? 0 : hd / 16;
#define FAST(g, nv) else if (G == g && NV == nv) attend_fast(Q, K, V, L, scale, O, g, nv);
  if (0) {}
  FAST(1, 4) FAST(2, 4) FAST(3, 4) FAST(4, 4) FAST(1, 8) FAST(2, 8)
  else attend_any(Q, K, V, L, scale, O, G, hd);
#undef FAST
}

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
