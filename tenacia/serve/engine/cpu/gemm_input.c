/* The products' input, transposed: included by kernels_avx512.c and kernels_vec.c before their
 * products, used by decode_stack.c (tenacia_small_gemm and the decode stack).
 *
 * Why: a block of MR rows against a panel reads, at every step k of its inner loop, one float of
 * each of its MR rows. In the input's own layout (rows x k, row-major) those floats lie k floats
 * apart: MR streams, MR cache lines touched a step, and for a product of k = 1536 the 16 rows
 * (96 KB) no longer fit in L1, so every panel reads them again from L2 through 16 streams beside
 * the panel's own. Transposed (k x rows), the MR floats of a step are consecutive: one stream,
 * one line per 16 rows, read from L1 as the panel streams past. The copy costs a read and a
 * write of the input (rows x k floats: 96 KB for 16 rows of k = 1536), shared by the threads,
 * against every panel of the product reading the input.
 *
 * Layout: xt[kk * rows + r] = x[r * k + kk]. One row is its own transpose (no copy is made). */
#include <omp.h>

#define TILE 16 /* columns of x per tile: a tile of xt is TILE x rows floats, whole lines when rows % 16 == 0 */

/* this thread's share [*lo, *hi) of n items */
static inline void share(long n, long *lo, long *hi) {
  long t = omp_get_thread_num(), T = omp_get_num_threads();
  *lo = n * t / T;
  *hi = n * (t + 1) / T;
}

/* columns k0 .. k1 - 1 of x (rows x k) into xt (k x rows): a whole tile of 8 rows at a time
 * through a local copy (8 x TILE floats, read a row at a time), written a column at a time as 8
 * consecutive floats, which the compiler writes as vectors (timed against the element-wise copy in
 * docs/benchmarks.md, 2026-12-04 23:33); what is left, element by element */
static void transpose_columns(const float *x, long rows, long k, float *xt, long k0, long k1) {
  for (long c0 = k0; c0 < k1; c0 += TILE) {
    long c1 = c0 + TILE < k1 ? c0 + TILE : k1, r0 = 0;
    if (c1 - c0 == TILE)
      for (; r0 + 8 <= rows; r0 += 8) {
        float t[8][TILE];
        for (long r = 0; r < 8; r++) memcpy(t[r], x + (r0 + r) * k + c0, sizeof t[r]);
        for (long c = 0; c < TILE; c++)
          for (long r = 0; r < 8; r++) xt[(c0 + c) * rows + r0 + r] = t[r][c];
      }
    for (long r = r0; r < rows; r++)
      for (long c = c0; c < c1; c++) xt[c * rows + r] = x[r * k + c];
  }
}

/* Inside a parallel region: this thread's share of the transposition, whole tiles of columns, so
 * that two threads write no line in common where xt is 64-byte aligned (rows > 1; no barrier). */
static inline void transpose_share(const float *x, long rows, long k, float *xt) {
  long lo, hi;
  share((k + TILE - 1) / TILE, &lo, &hi);
  transpose_columns(x, rows, k, xt, lo * TILE, hi * TILE < k ? hi * TILE : k);
}

/* Inside a parallel region, every thread of the team: its share, then a barrier. Returns what the
 * products read: xt, or x itself for one row (no copy, no barrier). */
static inline const float *transpose_input(const float *x, long rows, long k, float *xt) {
  if (rows == 1) return x;
  transpose_share(x, rows, k, xt);
#pragma omp barrier
  return xt;
}
