/* The project's own harness around pjreddie's Darknet C API: what `darknet detector test` computes, printed in
 * full precision. Usage: darknet_detect CFG WEIGHTS IMAGE THRESH [PIXELS_OUT]
 * load_network, load_image_color (stb_image), letterbox_image, network_predict, get_network_boxes (relative,
 * hier_thresh 0.5 as test_detector), do_nms_sort (0.45); then one line per detection and class over THRESH:
 *   class prob center_x center_y width height      (image pixels, not clipped)
 * PIXELS_OUT, when given, receives the decoded image: int32 width, height, channels, then float32 (c, y, x). */
#include <stdio.h>
#include <stdlib.h>

#include "darknet.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s CFG WEIGHTS IMAGE THRESH [PIXELS_OUT]\n", argv[0]);
        return 2;
    }
    float thresh = atof(argv[4]);
    network *net = load_network(argv[1], argv[2], 0);
    set_batch_network(net, 1);
    image im = load_image_color(argv[3], 0, 0);
    if (argc > 5) {
        FILE *file = fopen(argv[5], "wb");
        if (!file) {
            fprintf(stderr, "%s: cannot write\n", argv[5]);
            return 1;
        }
        int header[3] = {im.w, im.h, im.c};
        fwrite(header, sizeof(int), 3, file);
        fwrite(im.data, sizeof(float), (size_t)im.w * im.h * im.c, file);
        fclose(file);
    }
    image sized = letterbox_image(im, net->w, net->h);
    network_predict(net, sized.data);
    int count = 0;
    detection *dets = get_network_boxes(net, im.w, im.h, thresh, .5, 0, 1, &count);
    layer last = net->layers[net->n - 1];
    do_nms_sort(dets, count, last.classes, .45);
    for (int i = 0; i < count; ++i) {
        box b = dets[i].bbox;
        for (int j = 0; j < last.classes; ++j) {
            if (dets[i].prob[j] > thresh) {
                printf("%d %.9g %.9g %.9g %.9g %.9g\n", j, dets[i].prob[j], b.x * im.w, b.y * im.h, b.w * im.w,
                       b.h * im.h);
            }
        }
    }
    free_detections(dets, count);
    free_image(sized);
    free_image(im);
    return 0;
}
