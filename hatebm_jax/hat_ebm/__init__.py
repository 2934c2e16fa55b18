"""The paper's machinery: the Langevin samplers of a Hat EBM (eqs. 6-7), the
replay bank of tandem training (Sec. 3.4) and the maximum-likelihood update
of the hat network (eq. 8). Pure functions of arrays; every mode builds on
them."""
