/* The decode step's CPU kernels, float32, written once with GCC/Clang vector types and compiled
 * once per instruction set: -DVEC=8 -mavx2 -mfma (x86 with AVX2), -DVEC=4 with the compiler's
 * baseline (SSE2 on x86-64, NEON on aarch64). kernels.py builds and chooses; the AVX-512
 * machines keep their hand-written kernels_avx512.c. Both files export the same functions with
 * the same contracts (see there); only the code inside differs.
 *
 * The products' weights are packed in panels of PW = 16 output columns, k-major, whatever VEC is
 * (the same layout as kernels_avx512.c): P[(p * K + k) * 16 + j] = W[16p + j][k], zero past N.
 * A panel row is one 64-byte line; a block of MR rows keeps MR x (16 / VEC) accumulators in
 * registers and reads the panel once from memory (the next blocks of rows find it in L1/L2). The
 * rows are read through a transposed copy of x (gemm_input.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_input.c"

#ifndef VEC
#define VEC 4
#endif
#define PW 16
#define NVP (PW / VEC) /* vectors per panel row */
/* rows per block: MR x NVP accumulators plus NVP panel vectors and a broadcast fit the 16
 * registers of AVX2 and SSE (NEON has 32) */
#ifndef MRMAX
#define MRMAX (12 / NVP)
#endif
#ifndef FAR
#define FAR 1024 /* 64-byte lines ahead prefetched towards the outer caches */
#endif
#ifndef NEAR
#define NEAR 64 /* lines ahead prefetched into L1 */
#endif

typedef float vf __attribute__((vector_size(VEC * 4)));
typedef int vi __attribute__((vector_size(VEC * 4)));

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* one broadcast instruction: written out, since 0 + x costs an addition and a loop inserts */
#if VEC == 16
static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
#elif VEC == 8
static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x}; }
#else
static inline vf splat(float x) { return (vf){x, x, x, x}; }
#endif
static inline vf vsel(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
/* the sum of v's lanes, as a tree of halves (log2 VEC dependent additions, not VEC) */
static inline float hsum(vf v) {
  typedef float v4 __attribute__((vector_size(16)));
#if VEC == 16
  typedef float v8 __attribute__((vector_size(32)));
  v8 e = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  v4 h = __builtin_shufflevector(e, e, 0, 1, 2, 3) + __builtin_shufflevector(e, e, 4, 5, 6, 7);
#elif VEC == 8
  v4 h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
  v4 h = v;
#endif
  h += __builtin_shufflevector(h, h, 2, 3, 0, 1);
  return h[0] + h[1];
}

/* the largest of v's lanes */
static inline float hmax(vf v) {
  float top = v[0];
  for (int i = 1; i < VEC; i++) top = v[i] > top ? v[i] : top;
  return top;
}

void tenacia_small_gemm_pack(const float *w, long n, long k, float *p) {
  long panels = (n + PW - 1) / PW;
  for (long q = 0; q < panels; q++)
    for (long kk = 0; kk < k; kk++)
      for (long j = 0; j < PW; j++) {
        long col = q * PW + j;
        p[(q * k + kk) * PW + j] = col < n ? w[col * k + kk] : 0.0f;
      }
}

/* The k loop runs in chunks of KC: a chunk of a panel (KC x 64 bytes) is read from memory once,
 * by the first block of rows, which prefetches it FAR lines ahead into L2 (locality 1, as
 * kernels_avx512.c; a non-temporal prefetch that far ahead lands in L1 on AMD Zen 4 and is evicted
 * before use: measured in docs/benchmarks.md, "Serving on AMD Zen 4") and NEAR lines ahead
 * into L1, and stays in L1 for the other blocks of the same rows; each block keeps its running
 * sums in `part` between chunks. */
#ifndef KC
#define KC 128
#endif
#define ROWS 16 /* rows a panel's chunk is shared by */

/* mr (<= MRMAX) rows of x against k0 .. k1 of one panel, row m's k-th float at xt[k * ldt + m]
 * (gemm_input.c); running sums in part (mr x PW), started from b (PW) when first. */
static inline __attribute__((always_inline)) void block(const float *xt, long ldt, long k0, long k1,
                                                        const float *panel, float *part, const float *b,
                                                        int first, int bi, int blocks, const int mr) {
  vf acc[12][NVP]; /* rows up to 11 (mr < MRMAX in practice) */
  for (int m = 0; m < mr; m++)
    for (int v = 0; v < NVP; v++) acc[m][v] = vload((first ? b : part + m * PW) + v * VEC);
  (void)blocks;
  for (long kk = k0; kk < k1; kk++) {
    if (bi == 0) {
      __builtin_prefetch(panel + (kk + FAR) * PW, 0, 1);
      __builtin_prefetch(panel + (kk + NEAR) * PW, 0, 3);
    }
    vf w[NVP];
    for (int v = 0; v < NVP; v++) w[v] = vload(panel + kk * PW + v * VEC);
    for (int m = 0; m < mr; m++) {
      vf xm = splat(xt[kk * ldt + m]);
      for (int v = 0; v < NVP; v++) acc[m][v] += xm * w[v];
    }
  }
  for (int m = 0; m < mr; m++)
    for (int v = 0; v < NVP; v++) vstore(part + m * PW + v * VEC, acc[m][v]);
}

/* rows (<= ROWS) rows of xt (row stride ldt, gemm_input.c) against one panel, into part (rows x PW) */
static void panel_rows(const float *xt, long ldt, long k, const float *panel, float *part, const float *b,
                       long rows) {
  int blocks = (int)((rows + MRMAX - 1) / MRMAX);
  for (long k0 = 0; k0 < k; k0 += KC) {
    long k1 = k0 + KC < k ? k0 + KC : k, r = 0;
    for (; r + MRMAX <= rows; r += MRMAX)
      block(xt + r, ldt, k0, k1, panel, part + r * PW, b, k0 == 0, (int)(r / MRMAX), blocks, MRMAX);
    switch (rows - r) { /* the compiler specialises block for each constant row count */
#define LEFT(R) case R: block(xt + r, ldt, k0, k1, panel, part + r * PW, b, k0 == 0, (int)(r / MRMAX), blocks, R); break;
      LEFT(1) LEFT(2) LEFT(3) LEFT(4) LEFT(5) LEFT(6) LEFT(7) LEFT(8) LEFT(9) LEFT(10) LEFT(11)
#undef LEFT
      default: break;
    }
  }
}

/* Panels q0 .. q1 - 1 of y (m x n) = x (m x k) . W^T + bias: one thread's share of a product;
 * xt: x transposed (k x m, gemm_input.c). */
static void gemm_panels(const float *xt, long m, long k, const float *p, long n, const float *bias, float *y,
                        long q0, long q1) {
  for (long q = q0; q < q1; q++) {
    const float *panel = p + q * k * PW;
    long col = q * PW, cols = n - col < PW ? n - col : PW;
    float b[PW] = {0}, part[ROWS * PW];
    if (bias) memcpy(b, bias + col, cols * sizeof(float));
    for (long r0 = 0; r0 < m; r0 += ROWS) {
      long rows = m - r0 < ROWS ? m - r0 : ROWS;
      panel_rows(xt + r0, m, k, panel, part, b, rows);
      for (long r = 0; r < rows; r++) memcpy(y + (r0 + r) * n + col, part + r * PW, cols * sizeof(float));
    }
  }
}

/* tenacia_small_gemm (x . W^T + bias over these panels): decode_stack.c, shared by every build. */

/* 2. Elementwise work between the products (contracts in kernels_avx512.c). */
#define PARALLEL_ROWS 64

/* exp(x): 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2, p of degree 7 (Taylor); relative error
 * < 2e-7. Inputs below -87.3 give ~0 (the underflow of expf). */
static inline vf vexp(vf x) {
  x = vmax(x, splat(-87.3f));
  x = vmin(x, splat(88.3f));
  const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to the nearest integer */
  vf n = (x * 1.44269504088896341f + magic) - magic;
  vf r = x - n * 0.693145751953125f; /* ln2, high part */
  r = r - n * 1.428606765330187e-06f;  /* ln2, low part */
  vf p = splat(1.0f / 5040);
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23; /* 2^n, n in [-126, 128) */
  return p * (vf)e;
}

static void norm_row(float *xr, const float *dr, const float *w, float eps, float *out, long dim) {
  vf ss = splat(0.0f);
  long i = 0;
  for (; i + VEC <= dim; i += VEC) {
    vf v = vload(xr + i);
    if (dr) {
      v += vload(dr + i);
      vstore(xr + i, v);
    }
    ss += v * v;
  }
  float sum = hsum(ss);
  for (; i < dim; i++) {
    if (dr) xr[i] += dr[i];
    sum += xr[i] * xr[i];
  }
  float scale = 1.0f / sqrtf(sum / (float)dim + eps);
  for (i = 0; i + VEC <= dim; i += VEC) vstore(out + i, vload(xr + i) * scale * vload(w + i));
  for (; i < dim; i++) out[i] = xr[i] * scale * w[i];
}

void tenacia_add_rms_norm(float *x, const float *delta, const float *w, float eps, float *out, long rows, long dim,
                          int threads) {
#pragma omp parallel for schedule(static) if (rows >= PARALLEL_ROWS) num_threads(threads)
  for (long r = 0; r < rows; r++) norm_row(x + r * dim, delta ? delta + r * dim : 0, w, eps, out + r * dim, dim);
}

static void rotary_row(float *x, long heads, long hd, const float *c, const float *s) {
  long half = hd / 2;
  for (long h = 0; h < heads; h++) {
    float *a = x + h * hd, *b = a + half;
    long i = 0;
    for (; i + VEC <= half; i += VEC) {
      vf x1 = vload(a + i), x2 = vload(b + i);
      vstore(a + i, x1 * vload(c + i) - x2 * vload(s + i));
      vstore(b + i, x2 * vload(c + half + i) + x1 * vload(s + half + i));
    }
    for (; i < half; i++) {
      float x1 = a[i], x2 = b[i];
      a[i] = x1 * c[i] - x2 * s[i];
      b[i] = x2 * c[half + i] + x1 * s[half + i];
    }
  }
}

void tenacia_rotary(float *x, long rows, long ld, long heads, long hd, const float *cos, const float *sin,
                    int threads) {
#pragma omp parallel for schedule(static) if (rows >= PARALLEL_ROWS) num_threads(threads)
  for (long r = 0; r < rows; r++) rotary_row(x + r * ld, heads, hd, cos + r * hd, sin + r * hd);
}

static void silu_row(const float *g, const float *u, long n, float *o) {
  long i = 0;
  for (; i + VEC <= n; i += VEC) {
    vf gv = vload(g + i);
    vstore(o + i, gv / (1.0f + vexp(-gv)) * vload(u + i));
  }
  for (; i < n; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void tenacia_silu_mul(const float *gate, const float *up, long ld, long rows, long n, float *out, int threads) {
#pragma omp parallel for schedule(static) if (rows >= PARALLEL_ROWS) num_threads(threads)
  for (long r = 0; r < rows; r++) silu_row(gate + r * ld, up + r * ld, n, out + r * n);
}

/* 3. Attention of one new token per sequence over its cached keys and values (contract in
 * kernels_avx512.c): online softmax over blocks of KEYS keys, one task per (sequence, key/value
 * head). Head sizes that are a multiple of VEC run attend_fast for the common shapes (specialised
 * per constant G and NV, no register spilled in its loops: see there); others run attend_any. */
#define KEYS 32
#define MAX_GROUP 16
#define MAX_HD 512

static inline float softmax_block(float *s, long n, float *m, float *l) {
  vf most = splat(*m);
  long j = 0;
  for (; j + VEC <= n; j += VEC) most = vmax(most, vload(s + j));
  float top = hmax(most);
  for (; j < n; j++) top = s[j] > top ? s[j] : top;
  float corr = expf(*m - top), sum = 0.0f;
  j = 0;
  vf acc = splat(0.0f);
  for (; j + VEC <= n; j += VEC) {
    vf p = vexp(vload(s + j) - top);
    vstore(s + j, p);
    acc += p;
  }
  sum = hsum(acc);
  for (; j < n; j++) {
    s[j] = expf(s[j] - top);
    sum += s[j];
  }
  *l = *l * corr + sum;
  *m = top;
  return corr;
}

/* Within each 128-bit lane of a and b (4 floats): [a0+a2, b0+b2, a1+a3, b1+b3] */
static inline vf fold2(vf a, vf b) {
#if VEC == 4
  return __builtin_shufflevector(a, b, 0, 4, 1, 5) + __builtin_shufflevector(a, b, 2, 6, 3, 7);
#elif VEC == 8
  return __builtin_shufflevector(a, b, 0, 8, 1, 9, 4, 12, 5, 13) + __builtin_shufflevector(a, b, 2, 10, 3, 11, 6, 14, 7, 15);
#else
#error "attend_fast folds vectors of 4 or 8 floats"
#endif
}
/* fold2(a, b), fold2(c, d) -> within each 128-bit lane: the lane's sums of a, b, c, d */
static inline vf fold4(vf ab, vf cd) {
#if VEC == 4
  return __builtin_shufflevector(ab, cd, 0, 1, 4, 5) + __builtin_shufflevector(ab, cd, 2, 3, 6, 7);
#else
  return __builtin_shufflevector(ab, cd, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(ab, cd, 2, 3, 10, 11, 6, 7, 14, 15);
#endif
}

/* Key row kt's partial dot products with each head's query: d[g] */
static inline __attribute__((always_inline)) void dots(const float *Q, const float *kt, vf *d, const int G,
                                                       const int NV) {
  const long hd = NV * VEC;
  vf k0 = vload(kt);
  for (int g = 0; g < G; g++) d[g] = vload(Q + g * hd) * k0;
  for (int v = 1; v < NV; v++) {
    vf kv = vload(kt + v * VEC);
    for (int g = 0; g < G; g++) d[g] += vload(Q + g * hd + v * VEC) * kv;
  }
}

/* Key j of the block at K (n keys valid): d[g]; past n, the last valid key again (its score is
 * masked by the caller) */
static inline __attribute__((always_inline)) void key_dots(const float *Q, const float *K, long j, long n, vf *d,
                                                           const int G, const int NV) {
  dots(Q, K + (j < n ? j : n - 1) * NV * VEC, d, G, NV);
}

/* Keys j0 .. j0 + 3 (j0 < n): w[g], within each 128-bit lane, head g's sums of the four */
static inline __attribute__((always_inline)) void quad(const float *Q, const float *K, long j0, long n, vf *w,
                                                       const int G, const int NV) {
  vf a[MAX_GROUP], b[MAX_GROUP], pair[MAX_GROUP];
  key_dots(Q, K, j0, n, a, G, NV);
  key_dots(Q, K, j0 + 1, n, b, G, NV);
  for (int g = 0; g < G; g++) pair[g] = fold2(a[g], b[g]);
  key_dots(Q, K, j0 + 2, n, a, G, NV);
  key_dots(Q, K, j0 + 3, n, b, G, NV);
  for (int g = 0; g < G; g++) w[g] = fold4(pair[g], fold2(a[g], b[g]));
}

/* Keys j0 .. j0 + VEC - 1 of the block (j0 < n): s[g], head g's VEC scores in key order (unscaled;
 * past n, any finite value). For VEC = 8 two quads, their 128-bit lanes added across. */
static inline __attribute__((always_inline)) void score_vector(const float *Q, const float *K, long j0, long n, vf *s,
                                                               const int G, const int NV) {
#if VEC == 4
  quad(Q, K, j0, n, s, G, NV);
#else
  vf w0[MAX_GROUP], w1[MAX_GROUP];
  quad(Q, K, j0, n, w0, G, NV);
  if (j0 + 4 < n) quad(Q, K, j0 + 4, n, w1, G, NV);
  else
    for (int g = 0; g < G; g++) w1[g] = splat(0.0f);
  for (int g = 0; g < G; g++)
    s[g] = __builtin_shufflevector(w0[g], w1[g], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(w0[g], w1[g], 4, 5, 6, 7, 12, 13, 14, 15);
#endif
}

/* The register-resident path. A head's scores of VEC keys are made as one vector: each key's
 * partial dot products (a vector), folded VEC keys into one by shuffles and additions (fold2,
 * fold4, then across 128-bit lanes), where a horizontal sum a score took log2 VEC shuffles and
 * additions for one float. The block's scores, -inf past the length, then join the running
 * softmax a vector at a time (softmax_block on whole vectors). No vector lives across the whole
 * block in registers: the values are added group by group, CH vectors of one group's output at a
 * time, over the block's keys (in L1 by then), so that the live vectors are CH accumulators, a
 * broadcast score and one loaded value: 10 of AVX2's and SSE's 16 registers, where all G x NV
 * accumulators at once (24 for SmolLM2's 3 x 64 in AVX2) spilled to the stack at every key.
 * Between blocks a group's output waits in acc, in L1. The keys and values stream in by the
 * hardware's prefetchers alone: a software prefetch of each row a block ahead made the stage
 * slower in AVX2 on AMD Zen 4 (bench/decode_stack_ab.py --stages, as kernels_avx512.c). */
#define CH (NV < 8 ? NV : 8)
static inline __attribute__((always_inline)) void attend_fast(const float *Q, const float *K, const float *V, long L,
                                                              float scale, float *O, const int G, const int NV) {
  const long hd = NV * VEC;
  float acc[MAX_GROUP * 128 > 256 ? 256 : MAX_GROUP * 128] __attribute__((aligned(64))); /* G * hd <= 256 */
  float m[MAX_GROUP], l[MAX_GROUP], s[MAX_GROUP][KEYS];
  for (int g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  for (long i = 0; i < G * hd; i++) acc[i] = 0.0f;
  vi lane;
  for (int i = 0; i < VEC; i++) lane[i] = i;
  for (long t0 = 0; t0 < L; t0 += KEYS) {
    long n = L - t0 < KEYS ? L - t0 : KEYS, whole = (n + VEC - 1) / VEC * VEC;
    for (long j0 = 0; j0 < n; j0 += VEC) {
      vf sv[MAX_GROUP];
      score_vector(Q, K + t0 * hd, j0, n, sv, G, NV);
      vi inside = lane < (int)(n - j0); /* the lanes of keys before n */
      for (int g = 0; g < G; g++) vstore(s[g] + j0, vsel(inside, sv[g] * scale, splat(-INFINITY)));
    }
    for (int g = 0; g < G; g++) {
      float c = softmax_block(s[g], whole, &m[g], &l[g]); /* a key past n: exp(-inf), exp's floor, ~1e-38 */
      for (int v0 = 0; v0 < NV; v0 += CH) {
        float *a = acc + g * hd + v0 * VEC;
        const float *vt = V + t0 * hd + v0 * VEC;
        vf r[CH];
        for (int v = 0; v < CH; v++) r[v] = vload(a + v * VEC) * c;
        for (long j = 0; j < n; j++) {
          vf p = splat(s[g][j]);
          for (int v = 0; v < CH; v++) r[v] += p * vload(vt + j * hd + v * VEC);
        }
        for (int v = 0; v < CH; v++) vstore(a + v * VEC, r[v]);
      }
    }
  }
  for (int g = 0; g < G; g++) {
    float inv = 1.0f / l[g];
    for (int v = 0; v < NV; v++) vstore(O + g * hd + v * VEC, vload(acc + g * hd + v * VEC) * inv);
  }
}
#undef CH

static void attend_any(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                       long hd) {
  float acc[MAX_GROUP][MAX_HD], m[MAX_GROUP], l[MAX_GROUP], s[MAX_GROUP][KEYS];
  for (long g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    for (long d = 0; d < hd; d++) acc[g][d] = 0.0f;
  }
  for (long t0 = 0; t0 < L; t0 += KEYS) {
    long n = L - t0 < KEYS ? L - t0 : KEYS;
    for (long j = 0; j < n; j++) {
      const float *kt = K + (t0 + j) * hd;
      for (long g = 0; g < G; g++) {
        float dot = 0.0f;
        for (long d = 0; d < hd; d++) dot += Q[g * hd + d] * kt[d];
        s[g][j] = dot * scale;
      }
    }
    for (long g = 0; g < G; g++) {
      float c = softmax_block(s[g], n, &m[g], &l[g]);
      for (long d = 0; d < hd; d++) acc[g][d] *= c;
    }
    for (long j = 0; j < n; j++) {
      const float *vt = V + (t0 + j) * hd;
      for (long g = 0; g < G; g++)
        for (long d = 0; d < hd; d++) acc[g][d] += s[g][j] * vt[d];
    }
  }
  for (long g = 0; g < G; g++)
    for (long d = 0; d < hd; d++) O[g * hd + d] = acc[g][d] / l[g];
}

/* One query group (G heads) against L keys and values: the register-resident path where the
 * shape has one, else the general one. */
static void attend_head(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                        long hd) {
  long NV = hd % VEC ? 0 : hd / VEC;
#define FAST(g, nv) else if (G == g && NV == nv) attend_fast(Q, K, V, L, scale, O, g, nv);
  if (0) {
  }
  FAST(1, 64 / VEC) FAST(2, 64 / VEC) FAST(3, 64 / VEC) FAST(4, 64 / VEC) FAST(1, 128 / VEC) FAST(2, 128 / VEC)
  else attend_any(Q, K, V, L, scale, O, G, hd);
#undef FAST
}

#include "attention_tasks.c"
#include "prefill_attention.c"
#include "decode_stack.c"
#include "greedy.c"
