/* The vector kernels (tenacia/serve/engine/cpu/kernels_vec.c) against plain C references in
 * double precision, with no Python: built by test_cpu_kernels_cross.py for this CPU and, with
 * Debian's cross compiler, for aarch64 (NEON) and run under qemu-user. Prints one line per check;
 * exits 1 at the first check that fails, naming it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels_vec.c"

static unsigned long long seed = 88172645463325252ULL;
static float rnd(void) { /* xorshift, uniform in [-1, 1) */
  seed ^= seed << 13;
  seed ^= seed >> 7;
  seed ^= seed << 17;
  return (float)((seed >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *fill(long n) {
  float *p = malloc(n * sizeof(float));
  for (long i = 0; i < n; i++) p[i] = rnd();
  return p;
}
static int failed(const char *what, double err, double tol) {
  printf("%s %s: max error %.3g (tolerance %.3g)\n", err <= tol ? "ok" : "FAIL", what, err, tol);
  return err > tol;
}

static int check_gemm(long m, long k, long n, int bias) {
  float *x = fill(m * k), *w = fill(n * k), *b = bias ? fill(n) : NULL, *y = malloc(m * n * sizeof(float));
  float *p = malloc(((n + 15) / 16) * 16 * k * sizeof(float));
  tenacia_small_gemm_pack(w, n, k, p);
  tenacia_small_gemm(x, m, k, p, n, b, y, 2);
  double err = 0;
  for (long r = 0; r < m; r++)
    for (long c = 0; c < n; c++) {
      double s = b ? b[c] : 0;
      for (long i = 0; i < k; i++) s += (double)x[r * k + i] * w[c * k + i];
      err = fmax(err, fabs(y[r * n + c] - s) / (1.0 + fabs(s)));
    }
  char what[80];
  snprintf(what, sizeof what, "small_gemm %ld x %ld -> %ld%s", m, k, n, bias ? " + bias" : "");
  free(x), free(w), free(b), free(y), free(p);
  return failed(what, err, 1e-5);
}

static int check_elementwise(long rows) {
  long dim = 100, heads = 3, hd = 12, ld = heads * hd + 5, n = 37, fails = 0;
  float *x = fill(rows * dim), *d = fill(rows * dim), *w = fill(dim), *out = malloc(rows * dim * sizeof(float));
  float *x0 = malloc(rows * dim * sizeof(float));
  for (long i = 0; i < rows * dim; i++) x0[i] = x[i];
  tenacia_add_rms_norm(x, d, w, 1e-5f, out, rows, dim, 2);
  double err = 0;
  for (long r = 0; r < rows; r++) {
    double ss = 0;
    for (long i = 0; i < dim; i++) ss += ((double)x0[r * dim + i] + d[r * dim + i]) * ((double)x0[r * dim + i] + d[r * dim + i]);
    double scale = 1.0 / sqrt(ss / dim + 1e-5);
    for (long i = 0; i < dim; i++) {
      double s = (double)x0[r * dim + i] + d[r * dim + i];
      err = fmax(err, fabs(x[r * dim + i] - s));
      err = fmax(err, fabs(out[r * dim + i] - s * scale * w[i]));
    }
  }
  fails += failed("add_rms_norm", err, 1e-5);

  float *q = fill(rows * ld), *c = fill(rows * hd), *s = fill(rows * hd), *q0 = malloc(rows * ld * sizeof(float));
  for (long i = 0; i < rows * ld; i++) q0[i] = q[i];
  tenacia_rotary(q, rows, ld, heads, hd, c, s, 2);
  err = 0;
  for (long r = 0; r < rows; r++)
    for (long i = 0; i < ld; i++) {
      long h = i / hd, j = i % hd, half = hd / 2;
      double want = q0[r * ld + i];
      if (h < heads) {
        const float *a = q0 + r * ld + h * hd;
        double rot = j < half ? -a[j + half] : a[j - half];
        want = a[j] * (double)c[r * hd + j] + rot * s[r * hd + j];
      }
      err = fmax(err, fabs(q[r * ld + i] - want));
    }
  fails += failed("rotary (heads past the first 3 left alone)", err, 1e-6);

  float *gu = malloc(rows * 2 * n * sizeof(float)), *o = malloc(rows * n * sizeof(float));
  for (long i = 0; i < rows * 2 * n; i++) gu[i] = rnd() * 40.0f; /* far into both tails */
  tenacia_silu_mul(gu, gu + n, 2 * n, rows, n, o, 2);
  err = 0;
  for (long r = 0; r < rows; r++)
    for (long i = 0; i < n; i++) {
      double g = gu[r * 2 * n + i], u = gu[r * 2 * n + n + i], want = g / (1.0 + exp(-g)) * u;
      err = fmax(err, fabs(o[r * n + i] - want) / (1.0 + fabs(want)));
    }
  fails += failed("silu_mul", err, 1e-6);
  free(x), free(d), free(w), free(out), free(x0), free(q), free(c), free(s), free(q0), free(gu), free(o);
  return fails != 0;
}

static int check_attention(long H, long KVH, long hd) {
  long B = 5, cap = 80, lengths[5] = {1, 31, 32, 33, 80}, slots[5] = {7, 0, 3, 9, 12}, G = H / KVH, q_row = (H + 2 * KVH) * hd;
  float *qkv = fill(B * q_row), *mk = fill(B * KVH * cap * hd), *mv = fill(B * KVH * cap * hd);
  float *ck = calloc(16 * KVH * hd, sizeof(float)), *cv = calloc(16 * KVH * hd, sizeof(float));
  float *out = malloc(B * H * hd * sizeof(float));
  const float *k = qkv + H * hd, *v = qkv + (H + KVH) * hd;
  tenacia_store_kv(k, v, q_row, B, KVH, hd, ck, cv, slots, mk, mv, cap, lengths);
  tenacia_decode_attention(qkv, q_row, mk, mv, cap, lengths, B, H, KVH, hd, 1.0f / sqrtf((float)hd), out, 2);
  double err = 0, stored = 0;
  for (long b = 0; b < B; b++)
    for (long kh = 0; kh < KVH; kh++) {
      const float *K = mk + (b * KVH + kh) * cap * hd, *V = mv + (b * KVH + kh) * cap * hd;
      for (long d = 0; d < hd; d++) {
        stored = fmax(stored, fabs(K[(lengths[b] - 1) * hd + d] - k[b * q_row + kh * hd + d]));
        stored = fmax(stored, fabs(cv[(slots[b] * KVH + kh) * hd + d] - v[b * q_row + kh * hd + d]));
      }
      for (long g = 0; g < G; g++) {
        const float *Q = qkv + b * q_row + (kh * G + g) * hd;
        double sc[80], m = -1e300, l = 0;
        for (long t = 0; t < lengths[b]; t++) {
          double s = 0;
          for (long d = 0; d < hd; d++) s += (double)Q[d] * K[t * hd + d];
          sc[t] = s / sqrt((double)hd);
          m = fmax(m, sc[t]);
        }
        for (long t = 0; t < lengths[b]; t++) l += exp(sc[t] - m);
        for (long d = 0; d < hd; d++) {
          double o = 0;
          for (long t = 0; t < lengths[b]; t++) o += exp(sc[t] - m) / l * V[t * hd + d];
          err = fmax(err, fabs(out[(b * H + kh * G + g) * hd + d] - o));
        }
      }
    }
  char what[96];
  snprintf(what, sizeof what, "store_kv + decode_attention, %ld heads on %ld, head size %ld", H, KVH, hd);
  free(qkv), free(mk), free(mv), free(ck), free(cv), free(out);
  return failed(what, fmax(err, stored), 1e-5);
}

int main(void) {
  printf("VEC %d\n", VEC);
  for (long m = 1; m <= 16; m++)
    if (check_gemm(m, 200, 40, m % 2)) return 1;
  if (check_gemm(37, 300, 23, 1) || check_gemm(128, 130, 48, 0)) return 1;
  for (long rows = 1; rows <= 70; rows += 69) /* one row, and a prefill's threaded rows */
    if (check_elementwise(rows)) return 1;
  /* the register-resident paths (G 1-4 with head size 64, G 1-2 with 128) and the general one */
  if (check_attention(9, 3, 64) || check_attention(4, 2, 128) || check_attention(10, 2, 48) || check_attention(4, 4, 16))
    return 1;
  printf("all checks passed\n");
  return 0;
}
