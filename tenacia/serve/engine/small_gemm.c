/* y (M x N) = x (M x K) . W^T + bias in float32, for the few rows of a decode step (M <= 16).
 *
 * Built and loaded by small_gemm.py (see there for why it exists and when it is used). A decode
 * step's products read every weight once for a handful of rows, so they are bound by how fast the
 * weights stream from memory, not by arithmetic: MKL's packed GEMM for 16 rows overlaps its loads
 * with its arithmetic poorly (16 GB/s on a machine that reads 28-35 GB/s). This kernel keeps the
 * weights in panels of 16 output columns, k-major, so that every step of the inner loop reads the
 * next 64-byte line of one stream, and prefetches that stream far ahead in software.
 *
 * Layout: panel p holds columns 16p .. 16p+15 (zero-padded past N):
 *   P[(p * K + k) * 16 + j] = W[16p + j][k]
 * Threads (OpenMP, the same runtime torch uses) take contiguous runs of panels.
 */
#include <immintrin.h>

#define FAR 1024 /* 64-byte lines ahead prefetched towards the outer caches */
#define NEAR 64  /* lines ahead prefetched into L1 */

void tenacia_small_gemm_pack(const float *w, long n, long k, float *p) {
  long panels = (n + 15) / 16;
  for (long q = 0; q < panels; q++)
    for (long kk = 0; kk < k; kk++)
      for (long j = 0; j < 16; j++) {
        long col = q * 16 + j;
        p[(q * k + kk) * 16 + j] = col < n ? w[col * k + kk] : 0.0f;
      }
}

/* MR rows of x against one panel: MR accumulators of 16 columns each. */
#define BLOCK(MR)                                                                                \
  static inline void block##MR(const float *x, long k, const float *panel, float *y, long ldy,  \
                               const float *bias, __mmask16 mask) {                             \
    __m512 acc[MR];                                                                              \
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();                 \
    for (int m = 0; m < MR; m++) acc[m] = b;                                                     \
    for (long kk = 0; kk < k; kk++) {                                                            \
      _mm_prefetch((const char *)(panel + (kk + FAR) * 16), _MM_HINT_T2);                       \
      _mm_prefetch((const char *)(panel + (kk + NEAR) * 16), _MM_HINT_T0);                      \
      __m512 w = _mm512_loadu_ps(panel + kk * 16);                                               \
      for (int m = 0; m < MR; m++) acc[m] = _mm512_fmadd_ps(_mm512_set1_ps(x[m * k + kk]), w, acc[m]); \
    }                                                                                            \
    for (int m = 0; m < MR; m++) _mm512_mask_storeu_ps(y + m * ldy, mask, acc[m]);              \
  }
BLOCK(16)
BLOCK(8)
BLOCK(4)
BLOCK(2)
BLOCK(1)

/* x: (m, k) row-major; p: packed (see above); bias: (n,) or NULL; y: (m, n) row-major. */
void tenacia_small_gemm(const float *x, long m, long k, const float *p, long n, const float *bias,
                        float *y, int threads) {
  long panels = (n + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (long q = 0; q < panels; q++) {
    const float *panel = p + q * k * 16;
    long col = q * 16;
    __mmask16 mask = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1);
    const float *b = bias ? bias + col : 0;
    long r = 0;
    for (; r + 16 <= m; r += 16) block16(x + r * k, k, panel, y + r * n + col, n, b, mask);
    if (m - r >= 8) { block8(x + r * k, k, panel, y + r * n + col, n, b, mask); r += 8; }
    if (m - r >= 4) { block4(x + r * k, k, panel, y + r * n + col, n, b, mask); r += 4; }
    if (m - r >= 2) { block2(x + r * k, k, panel, y + r * n + col, n, b, mask); r += 2; }
    if (m - r >= 1) block1(x + r * k, k, panel, y + r * n + col, n, b, mask);
  }
}
