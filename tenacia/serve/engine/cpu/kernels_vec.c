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
#ifndef AHEAD /* the next attention fetched during the products (kv_ahead.c): no gain measured in the AVX2 build */
#define NO_AHEAD
#endif
#include "kv_ahead.c"

#ifndef VEC
#define VEC 4
#endif
#if VEC != 4 && VEC != 8 /* AVX-512 machines build kernels_avx512.c */
#error "kernels_vec.c is built with VEC 4 or 8"
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
#if VEC == 8
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
#if VEC == 8
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
                                                        int first, int bi, int blocks, const int mr,
                                                        struct ahead *a) {
  vf acc[12][NVP]; /* rows up to 11 (mr < MRMAX in practice) */
  for (int m = 0; m < mr; m++)
    for (int v = 0; v < NVP; v++) acc[m][v] = vload((first ? b : part + m * PW) + v * VEC);
  (void)blocks;
  for (long kk = k0; kk < k1; kk++) {
    if (bi == 0) {
      __builtin_prefetch(panel + (kk + FAR) * PW, 0, 1);
      __builtin_prefetch(panel + (kk + NEAR) * PW, 0, 3);
      if (a && kk % AHEAD_EVERY == 0) ahead_step(a);
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
                       long rows, struct ahead *a) {
  int blocks = (int)((rows + MRMAX - 1) / MRMAX);
  for (long k0 = 0; k0 < k; k0 += KC) {
    long k1 = k0 + KC < k ? k0 + KC : k, r = 0;
    for (; r + MRMAX <= rows; r += MRMAX)
      block(xt + r, ldt, k0, k1, panel, part + r * PW, b, k0 == 0, (int)(r / MRMAX), blocks, MRMAX, a);
    switch (rows - r) { /* the compiler specialises block for each constant row count */
#define LEFT(R) case R: block(xt + r, ldt, k0, k1, panel, part + r * PW, b, k0 == 0, (int)(r / MRMAX), blocks, R, a); break;
      LEFT(1) LEFT(2) LEFT(3) LEFT(4) LEFT(5) LEFT(6) LEFT(7) LEFT(8) LEFT(9) LEFT(10) LEFT(11)
#undef LEFT
      default: break;
    }
  }
}

/* Panels q0 .. q1 - 1 of y (m x n) = x (m x k) . W^T + bias: one thread's share of a product;
 * xt: x transposed (k x m, gemm_input.c). */
static void gemm_panels(const float *xt, long m, long k, const float *p, long n, const float *bias, float *y,
                        long q0, long q1, struct ahead *a) {
  for (long q = q0; q < q1; q++) {
    const float *panel = p + q * k * PW;
    long col = q * PW, cols = n - col < PW ? n - col : PW;
    float b[PW] = {0}, part[ROWS * PW];
    if (bias) memcpy(b, bias + col, cols * sizeof(float));
    for (long r0 = 0; r0 < m; r0 += ROWS) {
      long rows = m - r0 < ROWS ? m - r0 : ROWS;
      panel_rows(xt + r0, m, k, panel, part, b, rows, a);
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

/* 3. The decode attention: decode_attention_vec.c. */
#include "decode_attention_vec.c"

#include "attention_tasks.c"
#include "prefill_attention.c"
#include "decode_stack.c"
#include "greedy.c"
