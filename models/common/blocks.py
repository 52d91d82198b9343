"""Small blocks several systems are built from.

Layer order and parameter names follow the authors' repositories, because the released
checkpoints address parameters by those names (``<seq>.0.weight`` for the convolution,
``<seq>.1.*`` for its normalisation, and so on).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_norm_act(in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                  activation=nn.ReLU, norm=nn.BatchNorm2d):
    """Conv2d -> norm -> activation, as the ``conv2d`` helper of ATVGnet's ``ops.py``.

    The convolution has a bias only when there is no normalisation layer after it.
    Pass ``norm=None`` or ``activation=None`` to leave either out.
    """
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=norm is None)]
    if norm is not None:
        layers.append(norm(out_channels))
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class ResnetBlock(nn.Module):
    """pix2pix / CycleGAN residual block: x + [conv, norm, ReLU, (dropout), conv, norm](x).

    Parameters live in ``conv_block`` with the indices of the original implementation
    (``padding_type='zero'``: 0 conv, 1 norm, 2 ReLU, 3 dropout, 4 conv, 5 norm).
    """

    def __init__(self, dim, padding_type="zero", norm_layer=nn.BatchNorm2d, use_dropout=False,
                 use_bias=False):
        super().__init__()
        layers = []
        for i in range(2):
            padding = 0
            if padding_type == "reflect":
                layers.append(nn.ReflectionPad2d(1))
            elif padding_type == "replicate":
                layers.append(nn.ReplicationPad2d(1))
            elif padding_type == "zero":
                padding = 1
            else:
                raise ValueError(f"padding_type {padding_type!r} is not one of zero, reflect, replicate")
            layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=padding, bias=use_bias), norm_layer(dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ConvGRU(nn.Module):
    """Convolutional GRU (Shi et al. 2015 with GRU gates), one or more layers, time-major.

    Input is ``(seq, batch, C, H, W)`` -- the layout of a ``batch_first=False`` RNN. The
    gates are those of ``torch.nn.GRU`` with every matrix product replaced by a 2-D
    convolution padded to keep H x W:

        r = sigma(W_ir * x + b_ir + W_hr * h + b_hr)
        z = sigma(W_iz * x + b_iz + W_hz * h + b_hz)
        n = tanh(W_in * x + b_in + r o (W_hn * h + b_hn))
        h' = n + z o (h - n)

    Parameter names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``)
    and the 'same' padding rule are those of the convolutional_rnn package ATVGnet uses.
    Dropout, as in ``torch.nn.GRU``, acts only between layers.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, num_layers=1, dilation=1,
                 dropout=0.0):
        super().__init__()
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.dropout = dropout
        for layer in range(num_layers):
            layer_in = in_channels if layer == 0 else out_channels
            k = kernel_size
            setattr(self, f"weight_ih_l{layer}", nn.Parameter(torch.empty(3 * out_channels, layer_in, k, k)))
            setattr(self, f"weight_hh_l{layer}", nn.Parameter(torch.empty(3 * out_channels, out_channels, k, k)))
            setattr(self, f"bias_ih_l{layer}", nn.Parameter(torch.empty(3 * out_channels)))
            setattr(self, f"bias_hh_l{layer}", nn.Parameter(torch.empty(3 * out_channels)))
        bound = 1.0 / out_channels ** 0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _same_conv(self, x, weight, bias):
        # Total padding d*(k-1) split floor/ceil, as convolutional_rnn does for stride 1.
        total = self.dilation * (self.kernel_size - 1)
        lo, hi = total // 2, total - total // 2
        return F.conv2d(F.pad(x, [lo, hi, lo, hi]), weight, bias, dilation=self.dilation)

    def forward(self, x, h0=None):
        """Run over ``x`` (seq, batch, C, H, W); ``h0`` is (layers, batch, C_out, H, W) or None.

        Returns ``(output, h_n)``: the last layer's states for every step and the final
        state of every layer. With ``h0=None`` the hidden-to-hidden convolution of the
        first step is skipped: it convolves zeros, which gives exactly the bias.
        """
        hidden = []
        for layer in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")
            h = None if h0 is None else h0[layer]
            gates_x = self._same_conv(x.flatten(0, 1), w_ih, b_ih).unflatten(0, x.shape[:2])
            outputs = []
            for t in range(x.shape[0]):
                if h is None:
                    gates_h = b_hh.view(1, -1, 1, 1)
                else:
                    gates_h = self._same_conv(h, w_hh, b_hh)
                x_r, x_z, x_n = gates_x[t].chunk(3, 1)
                h_r, h_z, h_n = gates_h.chunk(3, 1)
                r = torch.sigmoid(x_r + h_r)
                z = torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)
                h = n + z * (-n if h is None else h - n)
                outputs.append(h)
            x = torch.stack(outputs)
            hidden.append(h)
            if self.dropout and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        return x, torch.stack(hidden)
