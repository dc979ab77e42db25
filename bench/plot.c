/* SPDX-License-Identifier: MIT */
/*
 * plot.c - `hetmm bench --plot FILE.svg`: throughput against size, one
 * panel per operation, hetmm solid and each baseline dashed, size on a
 * log scale.  Plain SVG 1.1, written directly; no dependency.
 */
#include "sections.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define PW 520.0          /* panel width */
#define PH 340.0          /* panel height */
#define ML 58.0           /* plot area margins within a panel */
#define MR 16.0
#define MT 34.0
#define MB 46.0
#define COLS 2

static const char *colour[] = { "#d62728", "#1f77b4", "#2ca02c", "#9467bd",
				"#ff7f0e", "#8c564b", "#17becf", "#7f7f7f" };

static void text(FILE *f, double x, double y, const char *anchor, int size,
		 const char *s)
{
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" "
		"font-size=\"%d\">", x, y, anchor, size);
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		default: fputc(*s, f);
		}
	}
	fputs("</text>\n", f);
}

/* A round step giving about 5 ticks up to top. */
static double nice_step(double top)
{
	double raw = top / 5, mag = pow(10, floor(log10(raw))), m = raw / mag;

	return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * mag;
}

static void panel(FILE *f, const struct plot_panel *p, double ox, double oy)
{
	double xmin = INFINITY, xmax = -INFINITY, ymax = 0, step;
	double legend_w, legend_h;
	double x0 = ox + ML, x1 = ox + PW - MR, y0 = oy + PH - MB, y1 = oy + MT;
	char buf[64];

	for (int s = 0; s < p->nseries; s++)
		for (int i = 0; i < p->s[s].n; i++) {
			double x = p->s[s].x[i], y = p->s[s].y[i];

			if (!(x > 0) || !isfinite(y))
				continue;
			xmin = fmin(xmin, log2(x));
			xmax = fmax(xmax, log2(x));
			ymax = fmax(ymax, y);
		}
	text(f, ox + PW / 2, oy + 20, "middle", 14, p->title);
	if (!(xmax >= xmin) || !(ymax > 0)) {
		text(f, ox + PW / 2, oy + PH / 2, "middle", 12, "no data");
		return;
	}
	if (xmax - xmin < 1) {
		xmin -= 0.5;
		xmax += 0.5;
	}
	step = nice_step(ymax * 1.05);
	ymax = ceil(ymax * 1.05 / step) * step;
#define X(v) (x0 + (log2(v) - xmin) / (xmax - xmin) * (x1 - x0))
#define Y(v) (y0 - (v) / ymax * (y0 - y1))
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\""
		" fill=\"none\" stroke=\"#000\"/>\n", x0, y1, x1 - x0, y0 - y1);
	for (double v = 0; v <= ymax + step / 2; v += step) {
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\""
			" stroke=\"#ddd\"/>\n", x0, Y(v), x1, Y(v));
		snprintf(buf, sizeof(buf), "%g", v);
		text(f, x0 - 6, Y(v) + 4, "end", 11, buf);
	}
	for (int e = (int)ceil(xmin); e <= (int)floor(xmax); e++) {
		double v = ldexp(1, e);

		if (e % 2 && xmax - xmin > 6)
			continue;    /* every other power of two when crowded */
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\""
			" stroke=\"#ddd\"/>\n", X(v), y0, X(v), y1);
		text(f, X(v), y0 + 16, "middle", 11,
		     fmt_size((size_t)v, buf, sizeof(buf)));
	}
	text(f, (x0 + x1) / 2, oy + PH - 10, "middle", 12,
	     "size (log scale)");
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
		"font-size=\"12\" transform=\"rotate(-90 %.1f %.1f)\">GB/s"
		"</text>\n", ox + 16, (y0 + y1) / 2, ox + 16, (y0 + y1) / 2);
	{
		/* legend box, drawn over the grid, under nothing */
		size_t w = 0;

		for (int s = 0; s < p->nseries; s++)
			if (strlen(p->s[s].name) > w)
				w = strlen(p->s[s].name);
		legend_w = 44 + 6.2 * (double)w;
		legend_h = 8 + 15.0 * p->nseries;
	}
	for (int s = 0; s < p->nseries; s++) {
		const struct plot_series *ps = &p->s[s];
		const char *c = colour[s % 8];
		int any = 0;

		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" "
			"stroke-width=\"%s\"%s points=\"", c,
			ps->hetmm ? "2.5" : "1.5",
			ps->hetmm ? "" : " stroke-dasharray=\"6 4\"");
		for (int i = 0; i < ps->n; i++) {
			if (!(ps->x[i] > 0) || !isfinite(ps->y[i]))
				continue;
			fprintf(f, "%s%.1f,%.1f", any ? " " : "", X(ps->x[i]),
				Y(ps->y[i]));
			any = 1;
		}
		fputs("\"/>\n", f);
		for (int i = 0; i < ps->n; i++)
			if (ps->x[i] > 0 && isfinite(ps->y[i]))
				fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\""
					" fill=\"%s\"/>\n", X(ps->x[i]),
					Y(ps->y[i]), c);
	}
	/* legend, top left of the plot area, over the lines */
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\""
		" fill=\"#fff\" fill-opacity=\"0.85\" stroke=\"#bbb\"/>\n",
		x0 + 4, y1 + 4, legend_w, legend_h);
	for (int s = 0; s < p->nseries; s++) {
		const struct plot_series *ps = &p->s[s];

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\""
			" stroke=\"%s\" stroke-width=\"%s\"%s/>\n", x0 + 8,
			y1 + 14 + 15 * s, x0 + 32, y1 + 14 + 15 * s,
			colour[s % 8], ps->hetmm ? "2.5" : "1.5",
			ps->hetmm ? "" : " stroke-dasharray=\"6 4\"");
		text(f, x0 + 38, y1 + 18 + 15 * s, "start", 11, ps->name);
	}
#undef X
#undef Y
}

int plot_svg(const char *path, const char *title,
	     const struct plot_panel *p, int npanels)
{
	int rows = (npanels + COLS - 1) / COLS;
	double w = PW * COLS, h = PH * rows + 40;
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
		"width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
		"font-family=\"sans-serif\">\n"
		"<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n",
		w, h, w, h);
	text(f, w / 2, 24, "middle", 16, title);
	for (int i = 0; i < npanels; i++)
		panel(f, &p[i], PW * (i % COLS), 40 + PH * (i / COLS));
	fputs("</svg>\n", f);
	if (fclose(f))
		return -errno;
	return 0;
}
