/* darknet_forward: run AlexeyAB's Darknet on preprocessed inputs and write layer outputs (a test harness).
 *
 * Reads jobs from stdin, one per line:  CFG WEIGHTS INPUT OUT_PREFIX MODE
 *   INPUT      float32 C*H*W (already preprocessed, the [net] size), or "-" for none (parse + weights only)
 *   OUT_PREFIX each written layer goes to OUT_PREFIX.<layer index>.bin (float32, out_c*out_h*out_w)
 *   MODE       "heads" ([yolo], [region], [Gaussian_yolo] only), "all" (every layer), or "boxes" (heads, and
 *              the detections of get_network_boxes at threshold 0.01, relative to the input, one line each:
 *              "det X Y W H OBJECTNESS PROB_1 .. PROB_C")
 * Darknet's own weights writer saves the loaded network to OUT_PREFIX.saved.weights, so a caller can check
 * the length Darknet reads. Prints, for each job, "job N" then "layer INDEX TYPE C H W" per written layer
 * and "done N". The network is loaded as `darknet detector test` does: parse with batch 1, load weights,
 * fuse batch norm, binarize xnor weights; and, as Darknet's main() does in a CPU build, gpu_index is -1
 * (libdarknet's default is 0, under which binary_align_weights inverts the bits of xnor weights for a GPU).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "darknet.h"

network parse_network_cfg_custom(char *filename, int batch, int time_steps);
void load_weights(network *net, char *filename);
void save_weights(network net, char *filename);

static int is_head(LAYER_TYPE type) { return type == YOLO || type == REGION || type == GAUSSIAN_YOLO; }

static void write_floats(const char *path, const float *data, size_t count) {
    FILE *file = fopen(path, "wb");
    if (!file || fwrite(data, sizeof(float), count, file) != count) {
        fprintf(stderr, "darknet_forward: cannot write %s\n", path);
        exit(3);
    }
    fclose(file);
}

int main(void) {
    char cfg[4096], weights[4096], input_path[4096], prefix[4096], mode[16], path[4200];
    int job = 0;
    gpu_index = -1; /* as darknet.c's main() in a build without GPU */
    while (scanf("%4095s %4095s %4095s %4095s %15s", cfg, weights, input_path, prefix, mode) == 5) {
        network net = parse_network_cfg_custom(cfg, 1, 1);
        load_weights(&net, weights);
        snprintf(path, sizeof(path), "%s.saved.weights", prefix);
        save_weights(net, path);
        printf("job %d\n", job);
        if (strcmp(input_path, "-") != 0) {
            fuse_conv_batchnorm(net);
            calculate_binary_weights(net);
            size_t count = (size_t)net.w * net.h * net.c;
            float *input = (float *)calloc(count, sizeof(float));
            FILE *file = fopen(input_path, "rb");
            if (!file || fread(input, sizeof(float), count, file) != count) {
                fprintf(stderr, "darknet_forward: %s does not hold %zu floats\n", input_path, count);
                return 2;
            }
            fclose(file);
            network_predict(net, input);
            for (int index = 0; index < net.n; ++index) {
                layer l = net.layers[index];
                if (strcmp(mode, "all") != 0 && !is_head(l.type)) continue;
                /* an anti-aliased layer keeps its stride-1 size; its blurred output (the blur's size, what the
                 * next layer reads) is copied to the start of l.output */
                layer *shape = l.antialiasing ? l.input_layer : &l;
                snprintf(path, sizeof(path), "%s.%d.bin", prefix, index);
                write_floats(path, l.output, (size_t)shape->outputs);
                printf("layer %d %d %d %d %d\n", index, (int)l.type, shape->out_c, shape->out_h, shape->out_w);
            }
            if (strcmp(mode, "boxes") == 0) {
                int count = 0;
                detection *dets = get_network_boxes(&net, net.w, net.h, 0.01f, 0.5f, 0, 1, &count, 0);
                /* get_detection_detections ([detection], YOLOv1) leaves dets[d].classes at 0: take the layer's */
                int detection_classes = 0;
                for (int index = 0; index < net.n; ++index) {
                    if (net.layers[index].type == DETECTION) detection_classes = net.layers[index].classes;
                }
                for (int d = 0; d < count; ++d) {
                    printf("det %.9g %.9g %.9g %.9g %.9g", dets[d].bbox.x, dets[d].bbox.y, dets[d].bbox.w,
                           dets[d].bbox.h, dets[d].objectness);
                    int classes = dets[d].classes ? dets[d].classes : detection_classes;
                    for (int c = 0; c < classes; ++c) printf(" %.9g", dets[d].prob[c]);
                    printf("\n");
                }
            }
            free(input);
        }
        printf("done %d\n", job++);
        fflush(stdout);
        /* Not freed: Darknet's free_network double-frees the output an [empty] layer shares with the layer
         * before it. The harness is short-lived; the memory goes back when it exits. */
    }
    return 0;
}
