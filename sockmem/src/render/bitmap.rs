//! plotters' bitmap backend, with its text drawn from the embedded font's glyph outlines placed
//! where the font puts them. plotters' own `ab_glyph` text drops each glyph's side bearing and
//! rounds its position (an address reads "198.18.21 3.1"); and wide lines are drawn segment by
//! segment. Everything else is plotters'.

use std::sync::OnceLock;

use ab_glyph::{point, Font as _, FontRef, ScaleFont as _};
use plotters::prelude::BitMapBackend;
use plotters_backend::{
    text_anchor::{HPos, VPos},
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// The font every text of a plot is drawn in.
pub fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(dejavu::sans::regular()).ok())
        .as_ref()
}

pub struct Bitmap<'a>(pub BitMapBackend<'a>);

/// A one-pixel line of a colour.
struct Thin(BackendColor);

impl BackendStyle for Thin {
    fn color(&self) -> BackendColor {
        self.0
    }
    fn stroke_width(&self) -> u32 {
        1
    }
}

type Result<T, E> = std::result::Result<T, DrawingErrorKind<E>>;

impl<'a> DrawingBackend for Bitmap<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), Self::ErrorType> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), Self::ErrorType> {
        self.0.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> Result<(), Self::ErrorType> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), Self::ErrorType> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), Self::ErrorType> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    /// A wide path as each of its segments drawn wide, not as plotters' one polygon: the
    /// polygon of a step line that goes back and forth in a pixel column (thousands of
    /// readings) crosses itself, and its fill leaves holes in the line.
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), Self::ErrorType> {
        let width = style.stroke_width() as i32;
        if width <= 1 || style.color().alpha == 0.0 {
            return self.0.draw_path(path, style);
        }
        let thin = Thin(style.color());
        let mut prev: Option<BackendCoord> = None;
        for p in path {
            match prev {
                Some(q) if q == p => continue,
                Some(q) => {
                    for ox in 0..width {
                        for oy in 0..width {
                            let (dx, dy) = (ox - width / 2, oy - width / 2);
                            self.0
                                .draw_line((q.0 + dx, q.1 + dy), (p.0 + dx, p.1 + dy), &thin)?;
                        }
                    }
                }
                None => {}
            }
            prev = Some(p);
        }
        Ok(())
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), Self::ErrorType> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), Self::ErrorType> {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), Self::ErrorType> {
        self.0.blit_bitmap(pos, size, src)
    }

    /// As plotters' default (the same layout box and anchors, so text sits where plotters
    /// planned it), with each glyph rasterised at its own position.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), Self::ErrorType> {
        let color = style.color();
        let Some(font) = font() else {
            return self.0.draw_text(text, style, pos);
        };
        if color.alpha == 0.0 {
            return Ok(());
        }
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let size = style.size() as f32;
        let scaled = font.as_scaled(size);
        // plotters puts the baseline half the size below the top of the layout box.
        let baseline = size / 2.0;
        let trans = style.transform();
        let (w, h) = self.get_size();
        let mut caret = 0.0f32;
        let mut prev = None;
        let mut pixels = Vec::new();
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(size, point(caret, baseline));
            caret += scaled.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            outline.draw(|x, y, cover| {
                pixels.push((b.min.x as i32 + x as i32, b.min.y as i32 + y as i32, cover));
            });
        }
        for (x, y, cover) in pixels {
            let (x, y) = trans.transform(x + dx - min_x, y + dy - min_y);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 && cover > 0.0 {
                let c = BackendColor {
                    alpha: color.alpha * f64::from(cover.min(1.0)),
                    rgb: color.rgb,
                };
                self.0.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use plotters::prelude::*;

    use super::*;

    #[test]
    fn a_wide_path_that_doubles_back_has_no_holes() {
        let (w, h) = (200u32, 100u32);
        let mut rgb = vec![255u8; (w * h * 3) as usize];
        {
            let mut b = Bitmap(BitMapBackend::with_buffer(&mut rgb, (w, h)));
            // A step line up and down through the same few columns, as a dense series draws.
            let mut path = vec![(10, 50)];
            for x in 11..190 {
                let y = if x % 2 == 0 { 20 } else { 80 };
                path.extend([(x, path.last().unwrap().1), (x, y), (x, y)]);
            }
            let style = ShapeStyle::from(&BLUE).stroke_width(2);
            b.draw_path(path, &style).unwrap();
            b.present().unwrap();
        }
        let blue = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            rgb[i..i + 3] == [0, 0, 255]
        };
        for x in 11..189 {
            for y in 21..80 {
                assert!(
                    blue(x, y) || blue(x.saturating_sub(1), y) || blue(x + 1, y),
                    "a hole at ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn text_is_drawn_from_the_embedded_font() {
        assert!(font().is_some(), "DejaVu Sans loads");
        let (w, h) = (200u32, 40u32);
        let mut rgb = vec![255u8; (w * h * 3) as usize];
        {
            let mut b = Bitmap(BitMapBackend::with_buffer(&mut rgb, (w, h)));
            super::super::plot::tests::register_font_for_tests();
            let style = ("sans-serif", 20).into_font().color(&BLACK);
            b.draw_text("198.18.213.1", &style, (5, 5)).unwrap();
            b.present().unwrap();
        }
        let dark = rgb.chunks(3).filter(|p| p[0] < 128).count();
        assert!(dark > 100, "{dark} dark pixels");
    }
}
